"""Smoke example: build a tiny random AudioMiniChat model, save it, and run it through the pipeline.

Shows the whole HF-native path offline in seconds (save -> AutoModel/AutoProcessor -> pipeline with
trust_remote_code). The output text is meaningless: the weights are random.
"""

import sys
import tempfile
from pathlib import Path

import soundfile as sf
from transformers import pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_model, speechlike  # noqa: E402  (tiny builders shared with the tests)


def main() -> None:
    model, processor = make_model("whisper")
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        wav = Path(tmp) / "clip.wav"
        sf.write(wav, speechlike(3.0), 16000)
        pipe = pipeline(model=tmp, trust_remote_code=True)
        bad = processor.tokenizer.all_special_ids + [processor.audio_token_id]
        out = pipe(str(wav), prompt="summarize the speech", max_new_tokens=8, suppress_tokens=bad)
        n = processor.num_audio_tokens(len(speechlike(3.0)))
        print(f"3.0 s clip -> {n} audio embeddings; pipeline output: {out['generated_text']!r}")


if __name__ == "__main__":
    main()
