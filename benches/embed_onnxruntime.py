#!/usr/bin/env python3
"""The peer of `techne bench inference`'s embeddings row: the same
all-MiniLM-L6-v2 int8 ONNX file driven from Python onnxruntime.

Same work as techne's Embedder (host/inference/src/embeddings.rs): the
model's tokenizer.json (HuggingFace `tokenizers`), truncation to 256 tokens,
padding to the longest text of each batch, batches of --batch texts, all graph
optimisations, --threads intra-op threads and one inter-op thread, mean pooling
over the attention mask and L2 normalisation (numpy).

Reads one sentence per line from --sentences, embeds them all --repetitions
times after one warm-up pass and prints one JSON object: the median
sentences/s, the dimension and the embeddings of the first --echo sentences
(so the caller can check both sides computed the same vectors).

Needs: pip install onnxruntime==1.31.1 tokenizers numpy
"""

import argparse
import json
import statistics
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the ONNX file")
    parser.add_argument("--tokenizer", required=True, help="its tokenizer.json")
    parser.add_argument("--sentences", required=True, help="a UTF-8 file with one sentence per line")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads")
    parser.add_argument("--batch", type=int, default=32, help="texts per forward pass")
    parser.add_argument("--max-length", type=int, default=256, help="token limit per text")
    parser.add_argument("--repetitions", type=int, default=3, help="timed passes over all sentences")
    parser.add_argument("--echo", type=int, default=2, help="embeddings of this many first sentences to print")
    args = parser.parse_args()
    try:
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer
    except ImportError as e:
        print(f"embed_onnxruntime.py: {e}: pip install onnxruntime==1.31.1 tokenizers numpy", file=sys.stderr)
        return 2

    with open(args.sentences, encoding="utf-8") as f:
        sentences = [line.rstrip("\n") for line in f if line.strip()]
    tokenizer = Tokenizer.from_file(args.tokenizer)
    padding = tokenizer.padding or {}
    tokenizer.enable_padding(pad_id=padding.get("pad_id", 0), pad_token=padding.get("pad_token", "[PAD]"))
    tokenizer.enable_truncation(max_length=max(args.max_length, 8))

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    input_names = {i.name for i in session.get_inputs()}
    output_name = session.get_outputs()[0].name

    def embed(texts):
        out = []
        for start in range(0, len(texts), args.batch):
            encodings = tokenizer.encode_batch(texts[start : start + args.batch])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in input_names:
                feed["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
            hidden = session.run([output_name], feed)[0]
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
            norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            out.append(pooled / norms)
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    vectors = embed(sentences)  # warm-up
    rates = []
    for _ in range(max(args.repetitions, 1)):
        start = time.perf_counter()
        embed(sentences)
        rates.append(len(sentences) / (time.perf_counter() - start))
    print(
        json.dumps(
            {
                "sentences_per_s": statistics.median(rates),
                "sentences": len(sentences),
                "dim": int(vectors.shape[1]) if vectors.size else 0,
                "onnxruntime": ort.__version__,
                "first": vectors[: args.echo].tolist(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
