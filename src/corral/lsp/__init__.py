"""Code completion in the editor: `corral lsp`, a language server over a local model.

`build_server(Completer(model))` gives a pygls server speaking llm-ls's protocol and the
standard completion requests; `corral.lsp.shape` decides how much to complete at a cursor.
"""
