"""The compiler: tools -> normalised `Tool`s -> JSON Schema IR -> Lark grammar text, and what reads a
grammar's language back without a model (llguidance over bytes, the call-list scanner, export to
other engines). It imports nothing of torch, the runtime or the chat format."""
