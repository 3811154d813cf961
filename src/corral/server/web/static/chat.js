// corral web chat: lists models, streams answers from /v1/chat/completions, keeps the
// conversation in the page. Plain browser JS, no build step, nothing loaded from elsewhere.
//
// Model text is only ever put into the page with textContent (never innerHTML): whatever a
// model writes stays text.
"use strict";

const KEY_STORE = "corral.apiKey"; // sessionStorage: the key goes when the tab does
const MODEL_STORE = "corral.model"; // localStorage: remember the last model picked

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"),
  messages: $("messages"),
  empty: $("empty"),
  error: $("error"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  newChat: $("new-chat"),
  system: $("system"),
  maxTokens: $("max-tokens"),
  temperature: $("temperature"),
  keyButton: $("key-button"),
  keyDialog: $("key-dialog"),
  keyForm: $("key-form"),
  keyInput: $("api-key"),
  keyReason: $("key-reason"),
};

/** The conversation sent with each request: {role, content} in order. */
let conversation = [];
/** The generation in flight: {controller, turn} or null. */
let running = null;

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

// ---- talking to the server -------------------------------------------------------------

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** The message of an error body: OpenAI's {error: {message}} or ollama's {error: "..."}. */
async function errorMessage(res) {
  try {
    const body = await res.json();
    const err = body && body.error;
    if (typeof err === "string") return err;
    if (err && err.message) return err.message;
  } catch (_) {
    // not JSON: fall through to the status line
  }
  return `${res.status} ${res.statusText}`.trim();
}

/** fetch() with the API key; a non-2xx answer becomes an ApiError (401 asks for a key). */
async function api(path, init = {}) {
  const headers = { ...(init.headers || {}), ...authHeaders() };
  const res = await fetch(path, { ...init, headers });
  if (res.ok) return res;
  const message = await errorMessage(res);
  if (res.status === 401) askForKey(sessionStorage.getItem(KEY_STORE) ? "That key was rejected." : "");
  throw new ApiError(res.status, message);
}

/** Server-sent events from a fetch body: yields each event's data (lines joined). */
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) yield data;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

// ---- models ------------------------------------------------------------------------------

async function loadModels() {
  ui.model.disabled = true;
  let ids;
  try {
    const res = await api("/v1/models");
    ids = (await res.json()).data.map((m) => m.id).sort();
  } catch (e) {
    setOptions([], "no models (see the error below)");
    showError(`Could not list models: ${e.message}`);
    return;
  }
  hideError();
  setOptions(ids, "no models: run `corral pull NAME`");
  const saved = localStorage.getItem(MODEL_STORE);
  if (saved && ids.includes(saved)) ui.model.value = saved;
  ui.model.disabled = ids.length === 0;
  updateButtons();
}

function setOptions(ids, emptyLabel) {
  ui.model.replaceChildren();
  if (ids.length === 0) {
    ui.model.append(new Option(emptyLabel, ""));
    return;
  }
  for (const id of ids) ui.model.append(new Option(id, id));
}

// ---- API key -----------------------------------------------------------------------------

function askForKey(reason) {
  ui.keyButton.hidden = false;
  ui.keyReason.textContent = reason || "This server needs an API key.";
  ui.keyInput.value = "";
  if (!ui.keyDialog.open) ui.keyDialog.showModal();
  ui.keyInput.focus();
}

ui.keyForm.addEventListener("submit", () => {
  // method="dialog" closes the dialog itself; store the key and try again
  const key = ui.keyInput.value.trim();
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
  loadModels();
});
ui.keyButton.addEventListener("click", () => askForKey("Enter the server's API key."));

// ---- rendering ---------------------------------------------------------------------------

/** Show `text` in `el`: prose keeps its line breaks, ``` fences become code blocks. */
function renderText(el, text) {
  const parts = text.split("```");
  const nodes = parts.map((part, i) => {
    if (i % 2 === 0) {
      const p = document.createElement("div");
      p.className = "prose";
      p.textContent = part;
      return p;
    }
    const pre = document.createElement("pre");
    const code = document.createElement("code");
    const newline = part.indexOf("\n");
    // the fence's first line names the language: keep it as a label, not as code
    const lang = newline >= 0 ? part.slice(0, newline).trim() : "";
    code.textContent = newline >= 0 && /^[\w+#.-]*$/.test(lang) ? part.slice(newline + 1) : part;
    if (lang && newline >= 0) pre.dataset.lang = lang;
    pre.append(code);
    return pre;
  });
  el.replaceChildren(...nodes.filter((n) => n.textContent !== "" || n.tagName === "PRE"));
}

function addTurn(role, text) {
  ui.empty.hidden = true;
  const turn = document.createElement("article");
  turn.className = `turn ${role}`;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = role === "user" ? "You" : ui.model.value || "assistant";
  const body = document.createElement("div");
  body.className = "body";
  renderText(body, text);
  turn.append(who, body);
  ui.messages.append(turn);
  scrollToEnd();
  return turn;
}

function addNote(turn, text) {
  const note = document.createElement("div");
  note.className = "note";
  note.textContent = text;
  turn.append(note);
}

function scrollToEnd() {
  // only follow the answer while the reader is already at the bottom
  const el = document.scrollingElement;
  if (el.scrollHeight - el.scrollTop - el.clientHeight < 120) el.scrollTop = el.scrollHeight;
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = false;
}

function hideError() {
  ui.error.hidden = true;
  ui.error.textContent = "";
}

function updateButtons() {
  ui.send.disabled = running !== null || !ui.model.value;
  ui.stop.disabled = running === null;
  ui.model.disabled = running !== null || ui.model.options.length === 0 || !ui.model.value;
}

// ---- chatting ----------------------------------------------------------------------------

function requestBody(model) {
  const messages = [];
  const system = ui.system.value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...conversation);
  const body = { model, messages, stream: true };
  const maxTokens = parseInt(ui.maxTokens.value, 10);
  if (maxTokens > 0) body.max_tokens = maxTokens;
  const temperature = parseFloat(ui.temperature.value);
  if (!Number.isNaN(temperature)) body.temperature = temperature;
  return body;
}

async function send() {
  const text = ui.prompt.value.trim();
  const model = ui.model.value;
  if (!text || !model || running) return;
  hideError();
  localStorage.setItem(MODEL_STORE, model);
  conversation.push({ role: "user", content: text });
  const userTurn = addTurn("user", text);
  ui.prompt.value = "";
  const turn = addTurn("assistant", "");
  turn.classList.add("streaming");
  const body = turn.querySelector(".body");
  const controller = new AbortController();
  const mine = { controller, turn, discarded: false };
  running = mine;
  updateButtons();

  let reply = "";
  let finish = null;
  let stopped = false;
  let drawn = 0; // repaint at most once a frame: tokens can come faster than frames
  const paint = () => {
    drawn = 0;
    renderText(body, reply);
    scrollToEnd();
  };
  try {
    const res = await api("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(requestBody(model)),
      signal: controller.signal,
    });
    for await (const data of sseData(res.body)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      // after the headers are sent, errors come in-band as {error: {...}}
      if (chunk.error) throw new ApiError(0, chunk.error.message || String(chunk.error));
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      if (choice.delta && choice.delta.content) {
        reply += choice.delta.content;
        if (!drawn) drawn = requestAnimationFrame(paint);
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  } catch (e) {
    if (e.name === "AbortError") stopped = true;
    else showError(e.message || String(e));
  } finally {
    if (drawn) cancelAnimationFrame(drawn);
    renderText(body, reply);
    turn.classList.remove("streaming");
    running = null;
    if (mine.discarded) {
      // New chat was pressed meanwhile: this answer belongs to no conversation any more
    } else if (reply) {
      conversation.push({ role: "assistant", content: reply });
      if (stopped) addNote(turn, "stopped");
      else if (finish === "length") addNote(turn, "cut off at the max tokens setting");
    } else {
      // nothing came back: take the question back so it can be sent again
      conversation.pop();
      userTurn.remove();
      turn.remove();
      if (!ui.prompt.value) ui.prompt.value = text;
      ui.empty.hidden = ui.messages.querySelector(".turn") !== null;
    }
    updateButtons();
  }
}

function stop() {
  // aborting the fetch closes the connection; the server cancels the generation
  if (running) running.controller.abort();
}

function newChat() {
  if (running) running.discarded = true;
  stop();
  conversation = [];
  for (const turn of ui.messages.querySelectorAll(".turn")) turn.remove();
  ui.empty.hidden = false;
  hideError();
  ui.prompt.focus();
}

ui.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  send();
});
ui.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
ui.stop.addEventListener("click", stop);
ui.newChat.addEventListener("click", newChat);
ui.model.addEventListener("change", updateButtons);

loadModels();
