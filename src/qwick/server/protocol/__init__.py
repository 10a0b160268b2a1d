"""Request and response bodies, one module per endpoint family (base.py: what chat and completions share),
mirroring OpenAI's API (`openai-python` types) plus vLLM's extra fields; the gate endpoints' are in
gate_protocol.py.

Requests accept unknown fields (clients send `user`, `metadata`, `store`...) and the server logs their names;
types are checked here, strictly (`true` is not a temperature), value ranges by `SamplingParams`, so each
rule lives in one place.
`Lenient` (leniency.py) takes what OpenAI's contract allows beyond strict types: null for "the default",
2.0 for an integer.
"""
