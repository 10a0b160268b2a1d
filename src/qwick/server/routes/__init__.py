"""The HTTP endpoints, one module per endpoint family. Each exposes `router(ctx, ...) -> JSONRouter` (the
family's routes over the shared ServerContext, plus whatever else it needs, e.g. the GateService);
server/app.py includes every router, in /openapi.json's order, in one list."""
