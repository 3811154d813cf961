/*
 * corral._bpe: byte-level BPE merging as llama.cpp's llm_tokenizer_bpe_session does it.
 *
 * Why not HF tokenizers' BPE model: building one from a 49k-token, 49k-merge GGUF costs
 * 50-70 ms (every token and merge converted to Rust strings and hashed), a third of what a
 * whole llama.cpp load of SmolLM2 takes. Here the tables are built from the str objects the
 * GGUF reader already made, in ~20 ms (mostly cache misses in the hash tables), and merging
 * follows llama.cpp step for step:
 *   - strings are interned: the tokens first (id = token id, the first one for a duplicated
 *     text), then every merge side and merge result that is not a token (ids >= n_vocab), so
 *     merges whose pieces are not tokens still apply, as llama.cpp looks merges up by text;
 *   - a word's symbols start as one per byte (its GPT-2 byte character), the lowest-ranked
 *     bigram merges first, the leftmost among equal ranks; stale bigrams are skipped;
 *   - ignore_merges (llama-3 style vocabularies): a word that is a token is that token;
 *   - a final piece that is not a token is emitted byte by byte (each byte of its text that
 *     is a one-byte token), as llama.cpp's byte_encode fallback does.
 * The pre-tokenizer (regex splits) stays in Python/HF; this module gets the words.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    char *arena;           /* every interned string's bytes, back to back */
    size_t arena_len, arena_cap;
    uint32_t *off, *len;   /* per string id */
    uint32_t n_str, cap_str, n_vocab;
    uint64_t *tab;         /* open addressing over the strings; see probe() */
    uint32_t tab_mask;
    uint64_t *pkey;        /* pair table: (left << 32 | right) + 1, 0 = empty */
    uint32_t *prank, *pnew;
    uint32_t pmask;
    int32_t byte_sym[256]; /* string id of each byte's GPT-2 character, -1 if never seen */
    int32_t byte_tok[256]; /* token id of the one-byte text, -1 if none (the fallback) */
    unsigned char map[256][2]; /* each byte's GPT-2 character, UTF-8 */
    unsigned char map_len[256];
    int ignore_merges;
    Py_ssize_t foreign;    /* merges whose sides or result are not tokens */
} Merger;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ULL; /* splitmix64's finaliser: FNV's low bits */
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBULL; /* cluster on short strings */
    return h ^ (h >> 31);
}

static uint32_t pow2_at_least(uint64_t n) { /* n <= 2^31: build() caps the sizes */
    uint64_t p = 16;
    while (p < n) p <<= 1;
    return (uint32_t)p;
}

static uint64_t hash_pair(uint64_t k) {
    k = (k ^ (k >> 30)) * 0xBF58476D1CE4E5B9ULL;
    k = (k ^ (k >> 27)) * 0x94D049BB133111EBULL;
    return k ^ (k >> 31);
}

/* Table entries: the string id + 1 (0 = empty) in the low half, the hash's high half above
 * it, so a probe touches the string bytes only when the hashes agree. */
static int32_t probe(const Merger *m, const char *s, size_t n, uint64_t h, uint32_t *slot) {
    const uint64_t tag = h >> 32 << 32;
    uint32_t i = (uint32_t)h & m->tab_mask;
    for (;; i = (i + 1) & m->tab_mask) {
        const uint64_t e = m->tab[i];
        if (e == 0) break;
        const uint32_t id = (uint32_t)e - 1;
        if ((e & ~0xFFFFFFFFULL) == tag && m->len[id] == n &&
            memcmp(m->arena + m->off[id], s, n) == 0)
            return (int32_t)id;
    }
    *slot = i;
    return -1;
}

static int32_t find(const Merger *m, const char *s, size_t n) {
    uint32_t slot;
    return probe(m, s, n, hash_bytes(s, n), &slot);
}

/* Doubles the string arrays and the table (kept at most half full); -1 without memory. */
static int grow(Merger *m) {
    const uint32_t cap = m->cap_str * 2;
    uint32_t *off = realloc(m->off, sizeof(uint32_t) * cap);
    if (off == NULL) return -1;
    m->off = off;
    uint32_t *len = realloc(m->len, sizeof(uint32_t) * cap);
    if (len == NULL) return -1;
    m->len = len;
    m->cap_str = cap;
    const uint32_t mask = pow2_at_least(2 * (uint64_t)cap) - 1;
    if (mask == m->tab_mask) return 0;
    uint64_t *tab = calloc((size_t)mask + 1, sizeof(uint64_t));
    if (tab == NULL) return -1;
    for (uint32_t i = 0; i <= m->tab_mask; i++) {
        const uint64_t e = m->tab[i];
        if (e == 0) continue;
        const uint32_t id = (uint32_t)e - 1;
        uint32_t j = (uint32_t)hash_bytes(m->arena + m->off[id], m->len[id]) & mask;
        while (tab[j] != 0) j = (j + 1) & mask;
        tab[j] = e;
    }
    free(m->tab);
    m->tab = tab;
    m->tab_mask = mask;
    return 0;
}

/* The id of a text, adding it when new; -1 when out of memory. */
static int32_t intern(Merger *m, const char *s, size_t n) {
    const uint64_t h = hash_bytes(s, n);
    uint32_t i;
    const int32_t found = probe(m, s, n, h, &i);
    if (found >= 0) return found;
    if (m->n_str == m->cap_str) {
        if (grow(m) < 0) return -1;
        probe(m, s, n, h, &i); /* its slot in the new table */
    }
    if (m->arena_len + n > UINT32_MAX) return -1; /* offsets are 32-bit */
    if (m->arena_len + n > m->arena_cap) {
        size_t cap = (m->arena_cap + n) * 2;
        char *a = realloc(m->arena, cap);
        if (a == NULL) return -1;
        m->arena = a;
        m->arena_cap = cap;
    }
    const uint32_t id = m->n_str++;
    memcpy(m->arena + m->arena_len, s, n);
    m->off[id] = (uint32_t)m->arena_len;
    m->len[id] = (uint32_t)n;
    m->arena_len += n;
    m->tab[i] = (h >> 32 << 32) | (id + 1);
    return (int32_t)id;
}

static int pair_find(const Merger *m, uint32_t l, uint32_t r, uint32_t *rank, uint32_t *out) {
    const uint64_t key = (((uint64_t)l << 32) | r) + 1;
    for (uint32_t i = (uint32_t)hash_pair(key) & m->pmask;; i = (i + 1) & m->pmask) {
        if (m->pkey[i] == 0) return 0;
        if (m->pkey[i] == key) {
            *rank = m->prank[i];
            *out = m->pnew[i];
            return 1;
        }
    }
}

/* The first rank of a pair wins, as llama.cpp's bpe_ranks.emplace keeps it. */
static void pair_add(Merger *m, uint32_t l, uint32_t r, uint32_t rank, uint32_t out) {
    const uint64_t key = (((uint64_t)l << 32) | r) + 1;
    uint32_t i = (uint32_t)hash_pair(key) & m->pmask;
    for (; m->pkey[i] != 0; i = (i + 1) & m->pmask)
        if (m->pkey[i] == key) return;
    m->pkey[i] = key;
    m->prank[i] = rank;
    m->pnew[i] = out;
}


static void merger_dealloc(Merger *m) {
    free(m->arena);
    free(m->off);
    free(m->len);
    free(m->tab);
    free(m->pkey);
    free(m->prank);
    free(m->pnew);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static PyTypeObject MergerType;

/* A str's UTF-8 without PyUnicode_AsUTF8AndSize, which would attach a UTF-8 copy to each of
 * the ~100k vocabulary strings (most are not ASCII: "Ġ" marks a leading space). ASCII
 * strings are their own UTF-8; others are encoded into *buf (grown as needed). Lone
 * surrogates, which a decoded GGUF never holds, encode as their three bytes. */
static const char *utf8_of(PyObject *s, char **buf, size_t *cap, size_t *n) {
    if (!PyUnicode_Check(s)) {
        PyErr_SetString(PyExc_TypeError, "tokens, merges and texts must be str");
        return NULL;
    }
    if (PyUnicode_READY(s) < 0) return NULL; /* only strings of the legacy C API need it */
    const Py_ssize_t len = PyUnicode_GET_LENGTH(s);
    if (PyUnicode_IS_ASCII(s)) {
        *n = (size_t)len;
        return (const char *)PyUnicode_DATA(s);
    }
    if (4 * (size_t)len > *cap) {
        free(*buf);
        *cap = 4 * (size_t)len + 64;
        *buf = malloc(*cap);
        if (*buf == NULL) {
            *cap = 0;
            PyErr_NoMemory();
            return NULL;
        }
    }
    const int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    unsigned char *o = (unsigned char *)*buf;
    for (Py_ssize_t i = 0; i < len; i++) {
        const Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x80) {
            *o++ = (unsigned char)c;
        } else if (c < 0x800) {
            *o++ = (unsigned char)(0xC0 | (c >> 6));
            *o++ = (unsigned char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            *o++ = (unsigned char)(0xE0 | (c >> 12));
            *o++ = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
            *o++ = (unsigned char)(0x80 | (c & 0x3F));
        } else {
            *o++ = (unsigned char)(0xF0 | (c >> 18));
            *o++ = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
            *o++ = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
            *o++ = (unsigned char)(0x80 | (c & 0x3F));
        }
    }
    *n = (size_t)(o - (unsigned char *)*buf);
    return *buf;
}

/* GPT-2's bytes_to_unicode: printable bytes keep their character, the others take
 * U+0100 onwards in byte order. */
static void byte_chars(Merger *m) {
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        const int kept = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        const int c = kept ? b : 256 + extra++;
        if (c < 0x80) {
            m->map[b][0] = (unsigned char)c;
            m->map_len[b] = 1;
        } else { /* every character here is below U+0800: two UTF-8 bytes */
            m->map[b][0] = (unsigned char)(0xC0 | (c >> 6));
            m->map[b][1] = (unsigned char)(0x80 | (c & 0x3F));
            m->map_len[b] = 2;
        }
    }
}

/* build(tokens: list[str], merges: list[str], ignore_merges: bool) -> Merger */
static PyObject *py_build(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *tokens, *merges;
    int ignore_merges;
    if (!PyArg_ParseTuple(args, "O!O!p", &PyList_Type, &tokens, &PyList_Type, &merges,
                          &ignore_merges))
        return NULL;
    const Py_ssize_t nt = PyList_GET_SIZE(tokens), nm = PyList_GET_SIZE(merges);
    /* every string id (tokens, then up to 3 per merge) and table size stays below 2^30 */
    if (nt + 3 * nm >= (Py_ssize_t)1 << 29) {
        PyErr_SetString(PyExc_ValueError, "vocabulary too large");
        return NULL;
    }
    Merger *m = PyObject_New(Merger, &MergerType);
    if (m == NULL) return NULL;
    /* every field freed by dealloc starts NULL before anything can fail */
    m->arena = NULL;
    m->off = m->len = m->prank = m->pnew = NULL;
    m->pkey = m->tab = NULL;
    m->arena_len = 0;
    m->n_str = 0;
    m->n_vocab = (uint32_t)nt;
    m->ignore_merges = ignore_merges;
    m->foreign = 0;
    byte_chars(m);
    /* most merge sides and results are tokens: a few more strings than tokens, grown */
    m->cap_str = (uint32_t)(nt + nm / 8 + 256);
    m->tab_mask = pow2_at_least(2 * (uint64_t)m->cap_str) - 1;
    m->pmask = pow2_at_least(2 * (uint64_t)nm) - 1;
    m->arena_cap = 8 * (size_t)nt + 1024;
    m->arena = malloc(m->arena_cap);
    m->off = malloc(sizeof(uint32_t) * m->cap_str);
    m->len = malloc(sizeof(uint32_t) * m->cap_str);
    m->tab = calloc((size_t)m->tab_mask + 1, sizeof(uint64_t));
    m->pkey = calloc((size_t)m->pmask + 1, sizeof(uint64_t));
    m->prank = malloc(sizeof(uint32_t) * ((size_t)m->pmask + 1));
    m->pnew = malloc(sizeof(uint32_t) * ((size_t)m->pmask + 1));
    char *scratch = NULL, *text = NULL;
    size_t scratch_cap = 0, text_cap = 0;
    if (!m->arena || !m->off || !m->len || !m->tab || !m->pkey || !m->prank || !m->pnew)
        goto nomem;

    for (Py_ssize_t i = 0; i < nt; i++) {
        size_t n;
        const char *s = utf8_of(PyList_GET_ITEM(tokens, i), &text, &text_cap, &n);
        if (s == NULL) goto fail;
        /* a duplicated text keeps its first id; the later token stays unreachable by text */
        const int32_t id = intern(m, s, (size_t)n);
        if (id < 0) goto nomem;
        if ((uint32_t)id != (uint32_t)i) { /* placeholder string so ids stay aligned */
            if (m->n_str == m->cap_str && grow(m) < 0) goto nomem;
            m->off[m->n_str] = 0;
            m->len[m->n_str] = UINT32_MAX; /* never equal to a real length */
            m->n_str++;
        }
    }
    for (Py_ssize_t i = 0; i < nm; i++) {
        size_t n;
        const char *s = utf8_of(PyList_GET_ITEM(merges, i), &text, &text_cap, &n);
        if (s == NULL) goto fail;
        /* llama.cpp splits at the first space from the second byte; no space: never used */
        const char *cut = n > 1 ? memchr(s + 1, ' ', n - 1) : NULL;
        if (cut == NULL) continue;
        const size_t nl = (size_t)(cut - s), nr = n - nl - 1;
        if (n > scratch_cap) {
            scratch_cap = 2 * n + 64;
            free(scratch);
            scratch = malloc(scratch_cap);
            if (scratch == NULL) goto nomem;
        }
        memcpy(scratch, s, nl);
        memcpy(scratch + nl, cut + 1, nr);
        const int32_t l = intern(m, s, nl), r = intern(m, cut + 1, nr);
        const int32_t o = intern(m, scratch, nl + nr);
        if (l < 0 || r < 0 || o < 0) goto nomem;
        if ((uint32_t)l >= m->n_vocab || (uint32_t)r >= m->n_vocab || (uint32_t)o >= m->n_vocab)
            m->foreign++;
        pair_add(m, (uint32_t)l, (uint32_t)r, (uint32_t)i, (uint32_t)o);
    }
    free(scratch);
    free(text);
    for (int b = 0; b < 256; b++) {
        m->byte_sym[b] = find(m, (const char *)m->map[b], m->map_len[b]);
        const char c = (char)b;
        const int32_t t = find(m, &c, 1);
        m->byte_tok[b] = t >= 0 && (uint32_t)t < m->n_vocab ? t : -1;
    }
    return (PyObject *)m;
nomem:
    PyErr_NoMemory();
fail:
    free(scratch);
    free(text);
    Py_DECREF(m);
    return NULL;
}

typedef struct {
    uint32_t start, n; /* bytes of the mapped word */
    int32_t prev, next, id;
} Sym;

typedef struct {
    uint64_t key; /* rank << 32 | left: the smallest pops first */
    uint32_t right, size, out;
} Bigram;

typedef struct {
    Bigram *heap;
    size_t n, cap;
} Heap;

static int heap_push(Heap *h, Bigram b) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        Bigram *p = realloc(h->heap, cap * sizeof(Bigram));
        if (p == NULL) return -1;
        h->heap = p;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        const size_t parent = (i - 1) / 2;
        if (h->heap[parent].key <= b.key) break;
        h->heap[i] = h->heap[parent];
        i = parent;
    }
    h->heap[i] = b;
    return 0;
}

static Bigram heap_pop(Heap *h) {
    const Bigram top = h->heap[0];
    const Bigram last = h->heap[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && h->heap[c + 1].key < h->heap[c].key) c++;
        if (last.key <= h->heap[c].key) break;
        h->heap[i] = h->heap[c];
        i = c;
    }
    if (h->n > 0) h->heap[i] = last;
    return top;
}

typedef struct {
    unsigned char *text; /* the mapped word */
    Sym *sym;
    size_t cap;          /* bytes of the input word the buffers hold */
    Heap heap;
    int32_t *ids;
    size_t n_ids, cap_ids;
} Work;

static int emit(Work *w, int32_t id) {
    if (w->n_ids == w->cap_ids) {
        size_t cap = w->cap_ids ? 2 * w->cap_ids : 256;
        int32_t *p = realloc(w->ids, cap * sizeof(int32_t));
        if (p == NULL) return -1;
        w->ids = p;
        w->cap_ids = cap;
    }
    w->ids[w->n_ids++] = id;
    return 0;
}

static int add_bigram(const Merger *m, Work *w, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return 0;
    const Sym *a = &w->sym[left], *b = &w->sym[right];
    uint32_t rank, out;
    if (a->id < 0 || b->id < 0 || !pair_find(m, (uint32_t)a->id, (uint32_t)b->id, &rank, &out))
        return 0;
    const Bigram g = {((uint64_t)rank << 32) | (uint32_t)left, (uint32_t)right, a->n + b->n, out};
    return heap_push(&w->heap, g);
}

/* One pre-tokenized word (raw UTF-8) to token ids appended to w->ids; -1 on no memory. */
static int encode_word(const Merger *m, Work *w, const unsigned char *word, size_t n) {
    if (n == 0) return 0;
    if (n > INT32_MAX / 2) return -1; /* symbol indices and mapped offsets are 32-bit */
    if (n > w->cap) {
        free(w->text);
        free(w->sym);
        w->text = malloc(2 * n);
        w->sym = malloc(n * sizeof(Sym));
        w->cap = w->text && w->sym ? n : 0;
        if (!w->cap) return -1;
    }
    uint32_t len = 0;
    for (size_t i = 0; i < n; i++) {
        const unsigned char b = word[i];
        Sym *s = &w->sym[i];
        s->start = len;
        s->n = m->map_len[b];
        s->prev = (int32_t)i - 1;
        s->next = i + 1 < n ? (int32_t)i + 1 : -1;
        s->id = m->byte_sym[b];
        memcpy(w->text + len, m->map[b], m->map_len[b]);
        len += m->map_len[b];
    }
    if (m->ignore_merges) {
        const int32_t id = find(m, (const char *)w->text, len);
        if (id >= 0 && (uint32_t)id < m->n_vocab) return emit(w, id);
    }
    w->heap.n = 0;
    for (size_t i = 1; i < n; i++)
        if (add_bigram(m, w, (int32_t)i - 1, (int32_t)i) < 0) return -1;
    while (w->heap.n > 0) {
        const Bigram g = heap_pop(&w->heap);
        const int32_t left = (int32_t)(uint32_t)g.key;
        Sym *a = &w->sym[left], *b = &w->sym[g.right];
        /* stale: a side was merged away or grew since this bigram was queued */
        if (a->n == 0 || b->n == 0 || a->n + b->n != g.size) continue;
        a->n += b->n;
        a->id = (int32_t)g.out;
        b->n = 0;
        a->next = b->next;
        if (b->next >= 0) w->sym[b->next].prev = left;
        if (add_bigram(m, w, a->prev, left) < 0 || add_bigram(m, w, left, a->next) < 0)
            return -1;
    }
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
        const Sym *s = &w->sym[i];
        if (s->id >= 0 && (uint32_t)s->id < m->n_vocab) {
            if (emit(w, s->id) < 0) return -1;
            continue;
        }
        for (uint32_t k = 0; k < s->n; k++) {
            const int32_t t = m->byte_tok[w->text[s->start + k]];
            if (t >= 0 && emit(w, t) < 0) return -1;
        }
    }
    return 0;
}

/* Merger.encode(words) -> list[int]: words are str, or tuples whose first item is the
 * str (what HF's pre_tokenize_str returns). Merging runs without the GIL. */
static PyObject *merger_encode(Merger *m, PyObject *arg) {
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "encode takes a list of words");
        return NULL;
    }
    /* our own tuple of the items: another thread may change the caller's list while the
     * GIL is released, and the UTF-8 buffers below live as long as their str objects */
    PyObject *words = PyList_AsTuple(arg);
    if (words == NULL) return NULL;
    const Py_ssize_t nw = PyTuple_GET_SIZE(words);
    const char **ptr = malloc(sizeof(char *) * (size_t)(nw + 1));
    Py_ssize_t *lens = malloc(sizeof(Py_ssize_t) * (size_t)(nw + 1));
    Work w = {0};
    PyObject *out = NULL;
    if (ptr == NULL || lens == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < nw; i++) {
        PyObject *item = PyTuple_GET_ITEM(words, i);
        if (PyTuple_Check(item) && PyTuple_GET_SIZE(item) > 0) item = PyTuple_GET_ITEM(item, 0);
        if (!PyUnicode_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "encode takes a list of str (or (str, ...) tuples)");
            goto done;
        }
        ptr[i] = PyUnicode_AsUTF8AndSize(item, &lens[i]);
        if (ptr[i] == NULL) goto done;
    }
    int err = 0;
    /* the tuple keeps every word, and so every UTF-8 buffer, alive meanwhile */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < nw && !err; i++)
        err = encode_word(m, &w, (const unsigned char *)ptr[i], (size_t)lens[i]);
    Py_END_ALLOW_THREADS
    if (err) {
        PyErr_NoMemory();
        goto done;
    }
    out = PyList_New((Py_ssize_t)w.n_ids);
    if (out == NULL) goto done;
    for (size_t i = 0; i < w.n_ids; i++) {
        PyObject *v = PyLong_FromLong(w.ids[i]);
        if (v == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, (Py_ssize_t)i, v);
    }
done:
    Py_DECREF(words);
    free(ptr);
    free(lens);
    free(w.text);
    free(w.sym);
    free(w.heap.heap);
    free(w.ids);
    return out;
}

/* Merger.find(text) -> the token id of that text (the first of duplicates) or None. */
static PyObject *merger_find(Merger *m, PyObject *text) {
    char *buf = NULL;
    size_t cap = 0, n;
    const char *s = utf8_of(text, &buf, &cap, &n);
    if (s == NULL) return NULL;
    const int32_t id = find(m, s, n);
    free(buf);
    if (id >= 0 && (uint32_t)id < m->n_vocab) return PyLong_FromLong(id);
    Py_RETURN_NONE;
}

static PyObject *merger_foreign(Merger *m, void *closure) {
    (void)closure;
    return PyLong_FromSsize_t(m->foreign);
}

static PyMethodDef merger_methods[] = {
    {"encode", (PyCFunction)merger_encode, METH_O,
     "encode(words) -> list[int]: BPE-merge pre-tokenized words into token ids."},
    {"find", (PyCFunction)merger_find, METH_O,
     "find(text) -> int | None: the token id of a text (the first of duplicates)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef merger_getset[] = {
    {"foreign_merges", (getter)merger_foreign, NULL,
     "merges whose sides or result are not tokens (they encode byte by byte)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject MergerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "corral._bpe.Merger",
    .tp_basicsize = sizeof(Merger),
    .tp_dealloc = (destructor)merger_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "BPE merge tables of one vocabulary; made by build().",
    .tp_methods = merger_methods,
    .tp_getset = merger_getset,
};

static PyMethodDef methods[] = {
    {"build", py_build, METH_VARARGS,
     "build(tokens, merges, ignore_merges) -> Merger: tables for llama.cpp's BPE merging."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_bpe", "llama.cpp's byte-level BPE merging; see corral.tokenizer.bpe.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__bpe(void) {
    if (PyType_Ready(&MergerType) < 0) return NULL;
    return PyModule_Create(&module);
}
