"""The runtime: a compiled grammar driven token by token over a model. `plan` (what a request needs
once), `matcher` (llguidance masks), our own fast-forward loop (`decoding`), the HF processor
(`logits_processor`), read-back of the calls (`reply`) and the prompt cache."""
