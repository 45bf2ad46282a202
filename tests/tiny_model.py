"""A tiny, randomly initialised Qwen3 with a real BPE tokenizer and Qwen3's chat template, built offline.

Fast enough for unit tests of the jobs (a training step takes milliseconds); it writes nonsense,
which is what a test of plumbing needs.
"""

import glob
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def corpus():
    texts = ["/no_think Expand this search query:", "hyde: lex: vec:", "user assistant system"]
    for path in sorted(glob.glob(str(ROOT / "data" / "*.jsonl")))[:3]:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                texts.append(row["query"])
                texts.extend(f"{kind}: {text}" for kind, text in row["output"])
    return texts


def trained_tokenizer(vocab_size):
    """A byte-level BPE trained on the project's data: small, but llama.cpp's converter does not know it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe)


def gguf_tokenizer(path):
    """The tokenizer in a llama.cpp vocab file (models/ggml-vocab-*.gguf), which llama.cpp's converter
    recognises, or in a folder where a model built from one was saved (reading the GGUF takes a while)."""
    from transformers import AutoTokenizer

    path = Path(path)
    if path.is_dir():
        return AutoTokenizer.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in
                                                                tokenizer.get_vocab()]})
    return tokenizer


def build_tiny_model(folder, hidden_size=64, vocab_size=512, head_dim=16, tokenizer_gguf=None):
    """Write a tiny Qwen3 model + tokenizer to `folder` and return its path.

    With `tokenizer_gguf` (a llama.cpp vocab GGUF such as ggml-vocab-gpt-2.gguf, or a model folder built
    from one) the tokenizer comes from it instead of being trained, so the model converts to GGUF; hidden_size 256 with head_dim 64 gives every
    matrix rows of 256 values, as k-quants need."""
    import trl
    from transformers import Qwen3Config, Qwen3ForCausalLM

    folder = Path(folder)
    tokenizer = gguf_tokenizer(tokenizer_gguf) if tokenizer_gguf else trained_tokenizer(vocab_size)
    template = Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja"
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    tokenizer.chat_template = template.read_text(encoding="utf-8")
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim,
                         tie_word_embeddings=True, max_position_embeddings=1024,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
