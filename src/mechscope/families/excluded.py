"""Model types in transformers' causal-LM mapping that mechscope deliberately does not wrap, each with its reason.

``tests/test_family_coverage.py`` walks the mapping and fails on any type that is neither supported nor listed
here, so a new transformers release announces its new families in CI.
"""

from __future__ import annotations

_BERTLIKE = ("a bidirectional encoder (BERT-style, post-norm, absolute positions) that HF lets run with a causal "
             "mask via is_decoder; it is not a decoder-only language model, and its ForCausalLM class exists to "
             "serve as the decoder of an encoder-decoder pair")
_SEQ2SEQ_DECODER = ("the decoder half of an encoder-decoder model: its blocks carry cross-attention to an encoder's "
                    "states and it was trained with them, so on its own it is not a decoder-only language model")
_SSM = "a state-space/recurrent model with no attention blocks, so attention hook points have no meaning"

EXCLUDED: dict[str, str] = {
    # encoders run as decoders
    "bert": _BERTLIKE,
    "bert-generation": _BERTLIKE,
    "big_bird": _BERTLIKE + " (block-sparse attention)",
    "camembert": _BERTLIKE,
    "data2vec-text": _BERTLIKE,
    "electra": _BERTLIKE,
    "ernie": _BERTLIKE,
    "megatron-bert": _BERTLIKE,
    "rembert": _BERTLIKE,
    "roberta": _BERTLIKE,
    "roberta-prelayernorm": _BERTLIKE,
    "roc_bert": _BERTLIKE + " (with glyph and pinyin embeddings)",
    "roformer": _BERTLIKE + " (with rotary positions)",
    "xlm-roberta": _BERTLIKE,
    "xlm-roberta-xl": _BERTLIKE,
    "xmod": _BERTLIKE + " (with per-language adapters)",
    "xlm": "a cross-lingual masked/causal encoder with language embeddings and post-norm blocks, trained "
           "bidirectionally for its released checkpoints; not a decoder-only language model",
    "xlnet": "a permutation language model with two-stream relative attention and segment recurrence, not a "
             "decoder-only causal transformer",
    "reformer": "uses LSH and chunked local attention with reversible residual layers; there is no per-layer "
                "residual stream or dense attention pattern to hook",
    # decoder halves of encoder-decoder models
    "bart": _SEQ2SEQ_DECODER,
    "bigbird_pegasus": _SEQ2SEQ_DECODER,
    "blenderbot": _SEQ2SEQ_DECODER,
    "blenderbot-small": _SEQ2SEQ_DECODER,
    "marian": _SEQ2SEQ_DECODER,
    "mbart": _SEQ2SEQ_DECODER,
    "mvp": _SEQ2SEQ_DECODER,
    "pegasus": _SEQ2SEQ_DECODER,
    "plbart": _SEQ2SEQ_DECODER,
    "prophetnet": _SEQ2SEQ_DECODER + " (and it predicts n future tokens with n-stream self-attention)",
    "trocr": _SEQ2SEQ_DECODER + " (the text decoder of an image-to-text OCR model)",
    "whisper": _SEQ2SEQ_DECODER + " (the text decoder of a speech recogniser)",
    # audio and multimodal models
    "musicgen": "an audio model: it predicts several interleaved codebooks of EnCodec audio tokens per step, "
                "conditioned on a text encoder through cross-attention",
    "musicgen_melody": "an audio model: it predicts several interleaved codebooks of EnCodec audio tokens per "
                       "step, conditioned on text and melody features",
    "moshi": "a speech-text model: its causal LM takes summed text and multi-codebook audio embeddings and is "
             "driven by a separate depth decoder, so it is not a text language model",
    "moss_transcribe_diarize": "a speech transcription/diarisation model (audio encoder + text decoder loaded as "
                               "ForConditionalGeneration), not a decoder-only text model",
    "git": "an image-to-text model whose decoder is a BERT-style encoder over image tokens and text with a mixed "
           "bidirectional/causal mask, not a decoder-only text LM",
    "got_ocr2": "an OCR vision-language model loaded as ForConditionalGeneration (vision encoder + Qwen2 "
                "decoder); wrap its text model with the qwen2 family instead",
    "fuyu": "a vision-language model that feeds raw image patches through a linear projection into a Persimmon "
            "decoder; wrap a text-only Persimmon model with the persimmon family instead",
    "mllama": "Llama 3.2 Vision: its text model interleaves gated cross-attention layers over image features "
              "between self-attention layers, so it is not a plain decoder-only text model",
    "phi4_multimodal": "a speech/vision-language model whose decoder carries LoRA adapters switched by input "
                       "modality; not a decoder-only text model",
    # no attention
    "mamba": _SSM,
    "mamba2": _SSM,
    "falcon_mamba": _SSM,
    "rwkv": "an RNN (RWKV time-mixing and channel-mixing), with no attention blocks, so attention hook points "
            "have no meaning",
    "xlstm": "a recurrent xLSTM model (mLSTM/sLSTM cells) with no attention blocks, so attention hook points "
             "have no meaning",
}
"""model_type → why it is not wrapped (encoder-only, encoder-decoder, no attention, ...)."""
