"""Text side of qwick: tokenizer, chat template, incremental detokenizer and output parsers."""

from qwick.tokenizer.chat import ChatTemplate
from qwick.tokenizer.detokenizer import IncrementalDetokenizer
from qwick.tokenizer.reasoning import (
    ReasoningDelta,
    ReasoningStreamParser,
    output_thinks,
    parse_reasoning,
    split_chat_output,
)
from qwick.tokenizer.tokenizer import Tokenizer
from qwick.tokenizer.tool_calls import (
    ToolCall,
    ToolCallDelta,
    ToolCallParseResult,
    ToolCallStreamParser,
    ToolStreamDelta,
    make_tool_call_id,
    parse_tool_calls,
)

__all__ = [
    "ChatTemplate",
    "IncrementalDetokenizer",
    "ReasoningDelta",
    "ReasoningStreamParser",
    "Tokenizer",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallParseResult",
    "ToolCallStreamParser",
    "ToolStreamDelta",
    "make_tool_call_id",
    "output_thinks",
    "parse_reasoning",
    "parse_tool_calls",
    "split_chat_output",
]
