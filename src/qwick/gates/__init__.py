"""Gates: declarative moderation, classification, rewriting, scoring and embedding over the engine, with a
decision ledger (README "Gates"). Modules: spec / loader / defaults (gate definitions), prompts, decisions,
service (GateService), offline (the LLM methods), ledger / ledger_query / cli / replay, recording, identity.

Nothing is imported here, so `qwick --help` (which registers `qwick ledger`) stays fast."""
