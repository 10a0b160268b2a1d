"""Pipelines: named chains of steps over the gates and retrieval, declared under `pipelines:` in a gates file
(README "Pipelines"). Modules: spec (StepSpec, PipelineSpec), loader (the `pipelines:` section -> Pipelines,
errors as `file:line`), retrieval (the Retrieval protocol retrieve/answer steps call), steps (what each step
kind does), records (ledger rows of steps the gate service does not record), runner (PipelineRunner: order,
conditions, deadlines), results, offline (`llm.pipeline`), cli (`qwick pipeline run`).

Nothing is imported here, so `qwick --help` (which registers `qwick pipeline`) stays fast."""
