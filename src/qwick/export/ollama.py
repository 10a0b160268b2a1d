"""An Ollama `Modelfile` for an exported GGUF, so `ollama create NAME -f DIR/Modelfile` works.

TEMPLATE is Qwen3's chat format in Ollama's Go template language: system prompt and tool list (`# Tools` with
<tools></tools>), user turns, assistant turns with <think> reasoning and <tool_call> JSON, tool results as
<tool_response> in a user turn (one turn per result, where Qwen3's template groups consecutive results), and
the empty think block Qwen3's template adds when thinking is turned off (Ollama's `think: false`). PARAMETERs
are Qwen3's recommended thinking-mode sampling (temperature 0.6, top_p 0.95, top_k 20, min_p 0) and its stop
tokens. Written from Ollama's template documentation; not run against Ollama here.
"""

from __future__ import annotations

import os
from pathlib import Path

TEMPLATE = """{{- $lastUserIdx := -1 -}}
{{- range $idx, $msg := .Messages -}}
{{- if eq $msg.Role "user" }}{{ $lastUserIdx = $idx }}{{ end -}}
{{- end }}
{{- if or .System .Tools }}<|im_start|>system
{{ if .System }}{{ .System }}{{ if .Tools }}

{{ end }}{{ end }}
{{- if .Tools }}# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if and .Thinking (gt $i $lastUserIdx) }}<think>
{{ .Thinking }}
</think>

{{ end }}
{{- .Content }}
{{- $content := .Content }}
{{- range $j, $call := .ToolCalls }}
{{- if or $j $content }}
{{ end }}<tool_call>
{"name": "{{ $call.Function.Name }}", "arguments": {{ $call.Function.Arguments }}}
</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ if and $.IsThinkSet (not $.Think) }}<think>

</think>

{{ end }}
{{- end }}
{{- end }}"""

PARAMETERS = (("temperature", "0.6"), ("top_p", "0.95"), ("top_k", "20"), ("min_p", "0"),
              ("repeat_penalty", "1"), ("stop", '"<|im_start|>"'), ("stop", '"<|im_end|>"'),
              ("stop", '"<|endoftext|>"'))


def modelfile_text(gguf_path: Path, folder: Path) -> str:
    """The Modelfile for `gguf_path`, written into `folder` (FROM is relative when the file is inside it)."""
    try:
        source = os.path.relpath(gguf_path.resolve(), folder.resolve())
        source = source if not source.startswith("..") else str(gguf_path.resolve())
    except ValueError:  # another drive
        source = str(gguf_path.resolve())
    if not source.startswith(("/", ".")):
        source = f"./{source}"
    lines = [f"FROM {source}", f'TEMPLATE """{TEMPLATE}"""']
    lines += [f"PARAMETER {name} {value}" for name, value in PARAMETERS]
    return "\n".join(lines) + "\n"


def write_modelfile(gguf_path: Path, folder: Path, force: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "Modelfile"
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists: pass --force to overwrite it")
    path.write_text(modelfile_text(gguf_path, folder), encoding="utf-8")
    return path
