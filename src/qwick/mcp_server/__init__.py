"""qwick as an MCP server: the gates (moderate, classify, rewrite, extract, score, embed) as MCP tools, for a
bigger agent to hand cheap last-mile work to the local model (`qwick mcp`, `qwick serve --mcp-path`)."""
