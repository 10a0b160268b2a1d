"""Gates: declarative moderation, classification, rewriting, scoring and embedding over the engine, with a
decision ledger (README "Gates"). Modules: spec / loader / defaults (gate definitions), kinds/ (one class per
gate kind, registered in GATE_KINDS), prompts, decisions, service (GateService, over the engine-client protocol
qwick.engine.client), offline (OfflineGates: `llm.gates`), ledger / ledger_query / cli / replay, recording,
identity. Nothing here imports qwick.llm: the LLM builds its gates (LLM.new_gates). A gates file's `pipelines:`
section is handed on unparsed (Gates.pipelines) to qwick.pipelines, which builds on this package.

Nothing is imported here, so `qwick --help` (which registers `qwick ledger`) stays fast."""
