"""herd's tokenizer: Meta's Llama 3 tiktoken BPE (128K or any trained size) and the Llama 3 chat format (+ 3.1 tools).

`load_tokenizer()` with no path loads the 128K `tokenizer.model` that the llama-models package ships.
"""

from importlib import resources
from pathlib import Path

from herd.errors import HerdError
from herd.tokenizer.bpe_file import read_bpe_file, write_bpe_file
from herd.tokenizer.chat_format import HEADER_ROLES, ChatFormat, Message, validate_messages
from herd.tokenizer.tiktoken_bpe import PAT_STR, SPECIAL_TOKENS, StreamDecoder, Tokenizer, split_for_tiktoken
from herd.tokenizer.tool_calls import (
    BUILTIN_TOOLS,
    ToolCall,
    ToolFormat,
    ToolList,
    Tools,
    custom_tools_prompt,
    new_call_id,
    parse_tool_calls,
    parse_tools,
    system_prompt,
    tool_call_text,
)

# Where a tokenizer file sits inside a model directory (Meta checkpoint dir, HF repo's original/).
TOKENIZER_FILE_NAMES = ("tokenizer.model", "original/tokenizer.model")

__all__ = [
    "BUILTIN_TOOLS",
    "HEADER_ROLES",
    "PAT_STR",
    "SPECIAL_TOKENS",
    "ChatFormat",
    "Message",
    "StreamDecoder",
    "Tokenizer",
    "ToolCall",
    "ToolFormat",
    "ToolList",
    "Tools",
    "custom_tools_prompt",
    "default_tokenizer_path",
    "load_tokenizer",
    "new_call_id",
    "parse_tool_calls",
    "parse_tools",
    "read_bpe_file",
    "split_for_tiktoken",
    "system_prompt",
    "tool_call_text",
    "validate_messages",
    "write_bpe_file",
]


def default_tokenizer_path() -> Path:
    """Path of Meta's Llama 3 `tokenizer.model` inside the installed llama-models package."""
    try:
        path = Path(str(resources.files("llama_models.llama3") / "tokenizer.model"))
    except ModuleNotFoundError:
        raise HerdError(
            "the default Llama 3 tokenizer needs the llama-models package: pip install llama-models"
        ) from None
    if not path.is_file():
        raise HerdError(
            f"llama-models has no tokenizer file at {path}; reinstall it: pip install --force-reinstall llama-models"
        )
    return path


def load_tokenizer(path: str | Path | None = None) -> Tokenizer:
    """Load a tokenizer from a BPE file, from a model directory holding one, or (None) the default 128K one."""
    if path is None:
        return Tokenizer(default_tokenizer_path())
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in TOKENIZER_FILE_NAMES if (path / name).is_file()]
        if not found:
            raise HerdError(f"tokenizer file not found in {path}: expected {' or '.join(TOKENIZER_FILE_NAMES)}")
        path = found[0]
    return Tokenizer(path)
