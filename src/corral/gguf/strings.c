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

static PyMethodDef methods[] = {
    {"strings", (PyCFunction)(void (*)(void))py_strings, METH_FASTCALL,
     "strings(buffer, offset, count) -> (list[str], end) or (bad index, its offset)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_gguf_strings", "GGUF string arrays; see corral.gguf.reader.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__gguf_strings(void) { return PyModule_Create(&module); }
