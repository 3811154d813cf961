/*
 * corral._gguf_strings: a GGUF string array (u64 little-endian length, then the UTF-8
 * bytes, repeated) parsed into a list of str in one C call.
 *
 * A vocabulary holds 50k-260k strings (tokens, merges); parsed one struct.unpack at a time
 * in Python that is ~0.1 s of a model's load, which is what a whole llama.cpp load takes.
 * Invalid UTF-8 is replaced (U+FFFD), as the Python reader does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* strings(buffer, offset, count) -> (list[str], end offset), or (index, offset) of the
 * first string that runs past the end of the buffer, so the caller can name it. */
static PyObject *py_strings(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "strings(buffer, offset, count)");
        return NULL;
    }
    Py_ssize_t off = PyLong_AsSsize_t(args[1]);
    Py_ssize_t count = PyLong_AsSsize_t(args[2]);
    if ((off == -1 || count == -1) && PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *buf = (const unsigned char *)view.buf;
    const Py_ssize_t size = view.len;
    PyObject *out = PyList_New(0);
    if (out == NULL) goto fail;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t n;
        if (off < 0 || size - off < 8) goto truncated;
        memcpy(&n, buf + off, 8); /* GGUF is little-endian, as is every host we build for */
        if (n > (uint64_t)(size - off - 8)) goto truncated;
        PyObject *s = PyUnicode_DecodeUTF8((const char *)buf + off + 8, (Py_ssize_t)n, "replace");
        if (s == NULL) goto fail;
        int err = PyList_Append(out, s);
        Py_DECREF(s);
        if (err < 0) goto fail;
        off += 8 + (Py_ssize_t)n;
        continue;
    truncated:
        Py_DECREF(out);
        PyBuffer_Release(&view);
        return Py_BuildValue("(nn)", i, off);
    }
    PyBuffer_Release(&view);
    PyObject *res = Py_BuildValue("(Nn)", out, off);
    return res;
fail:
    Py_XDECREF(out);
    PyBuffer_Release(&view);
    return NULL;
}

/* merge_pairs(list[str]) -> list[(left, right)]: each BPE merge split at its first space
 * after the first character, as llama.cpp splits them (so a left side may start with a
 * space); a merge without one gives (merge, ""). The Python split costs ~30 ms of a 49k-merge
 * load. */
static PyObject *py_merge_pairs(PyObject *self, PyObject *merges) {
    (void)self;
    if (!PyList_Check(merges)) {
        PyErr_SetString(PyExc_TypeError, "merge_pairs takes a list of str");
        return NULL;
    }
    const Py_ssize_t n = PyList_GET_SIZE(merges);
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *m = PyList_GET_ITEM(merges, i);
        if (!PyUnicode_Check(m)) {
            PyErr_SetString(PyExc_TypeError, "merge_pairs takes a list of str");
            goto fail;
        }
        const Py_ssize_t len = PyUnicode_GET_LENGTH(m);
        const Py_ssize_t cut = len > 1 ? PyUnicode_FindChar(m, ' ', 1, len, 1) : -1;
        if (cut == -2) goto fail;
        PyObject *pair;
        if (cut < 0) {
            pair = Py_BuildValue("(Os)", m, "");
        } else {
            PyObject *left = PyUnicode_Substring(m, 0, cut);
            PyObject *right = left ? PyUnicode_Substring(m, cut + 1, len) : NULL;
            pair = right ? PyTuple_Pack(2, left, right) : NULL;
            Py_XDECREF(left);
            Py_XDECREF(right);
        }
        if (pair == NULL) goto fail;
        PyList_SET_ITEM(out, i, pair);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"merge_pairs", (PyCFunction)py_merge_pairs, METH_O,
     "merge_pairs(list[str]) -> list[(str, str)], split as llama.cpp splits BPE merges."},
    {"strings", (PyCFunction)(void (*)(void))py_strings, METH_FASTCALL,
     "strings(buffer, offset, count) -> (list[str], end) or (bad index, its offset)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_gguf_strings", "GGUF string arrays; see corral.gguf.reader.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__gguf_strings(void) { return PyModule_Create(&module); }
