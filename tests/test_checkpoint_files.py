"""Every SAM checkpoint file users have loads through every entry point: `SamModel.from_pretrained`, `load_sam`,
`sam-hf segment --model` and the Space's `--model`, from a local directory and, offline, from a Hub id whose files
sit in a fake Hugging Face cache (`models--org--name/snapshots/<commit>/`), so the Hub-id code path itself runs.

Layouts, replicated from the real Hub repos (REFERENCE.md section 11) on small random models:
- `bin`: a transformers 4.29-era `config.json` (`model_type: "sam"`, leftover fields) and `pytorch_model.bin` with both
  positional-embedding keys sharing one storage (the `facebook/sam-vit-*` repos before Dec 2023, many fine-tunes);
- `safetensors`: the same config with `model.safetensors` without the tied duplicate (the Hub's conversion);
- `both`: both weight files (safetensors is read);
- `slimsam`: a short config (`vision_config` with only `hidden_size` and `mlp_dim`), safetensors only;
- `sam_hf`: a directory saved by sam_hf's own `save_pretrained` with its processor;
- `official`: the official `.pth` as downloaded, converted in memory (the model's size read off its shapes).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import huggingface_hub
import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import save_file
from transformers import SamModel as TransformersSamModel

from sam_hf import SamConfig, SamModel, SamPredictor, SamProcessor, load_sam
from sam_hf.cli import main
from sam_hf.conversion import convert_state_dict
from space import app
from tests.helpers import hub_preprocessor_config, perturb_, small_official_sam, small_sam_config

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TIED = ("shared_image_embedding.positional_embedding", "prompt_encoder.shared_embedding.positional_embedding")
OFFICIAL_FILE = "sam_vit_small_0123ab.pth"
SLIMSAM_VISION = {"hidden_size": 384, "mlp_dim": 1536}  # nielsr/slimsam-50-uniform's whole vision_config
LEFTOVERS = {
    "model_type": "",
    "dropout": 0.0,
    "initializer_range": 0.02,
    "return_dict": True,
    "chunk_size_feed_forward": 0,
}


def config_429(config: SamConfig) -> dict:
    """`config.json` as transformers 4.29 wrote it for facebook/sam-vit-*: top-level `model_type: "sam"`, full
    sub-config dicts with `model_type: ""` and fields sam_hf does not have, decoder `layer_norm_eps` 1e-6."""
    vision = {key: getattr(config.vision_config, key) for key in ("hidden_size", "num_hidden_layers", "image_size")}
    vision |= {
        "num_attention_heads": config.vision_config.num_attention_heads,
        "window_size": config.vision_config.window_size,
        "global_attn_indexes": config.vision_config.global_attn_indexes,
        "mlp_dim": config.vision_config.mlp_dim,
        "num_pos_feats": 128,
        "output_channels": 256,
        "intermediate_size": 6144,
        "projection_dim": 512,
        **LEFTOVERS,
    }
    return {
        "architectures": ["SamModel"],
        "model_type": "sam",
        "initializer_range": 0.02,
        "transformers_version": "4.29.0.dev0",
        "vision_config": vision,
        "prompt_encoder_config": {"image_size": config.prompt_encoder_config.image_size, **LEFTOVERS},
        "mask_decoder_config": {"layer_norm_eps": 1e-6, "mlp_dim": 2048, **LEFTOVERS},
    }


def transformers_weights(model: SamModel) -> dict[str, torch.Tensor]:
    """The state dict as transformers 4.29 saved it: both positional-embedding keys, one storage."""
    state = {key: value.clone() for key, value in model.state_dict().items()}
    state[TIED[1]] = state[TIED[0]]
    assert state[TIED[0]].untyped_storage().data_ptr() == state[TIED[1]].untyped_storage().data_ptr()
    return state


def write_layout(directory: Path, layout: str) -> dict[str, torch.Tensor]:
    """Writes `layout` to `directory`; returns the state dict (sam_hf names) the loaded model must hold."""
    directory.mkdir(parents=True)
    if layout == "official":
        state = small_official_sam_state()
        torch.save(state, directory / OFFICIAL_FILE)
        return convert_state_dict(state)
    config = SamConfig(vision_config=SLIMSAM_VISION) if layout == "slimsam" else small_sam_config()
    torch.manual_seed(0)
    model = perturb_(SamModel(config), seed=12)
    if layout == "sam_hf":
        model.save_pretrained(directory)
        SamProcessor.for_config(config).save_pretrained(directory)
        return model.state_dict()
    if layout == "slimsam":
        short = {"architectures": ["SamModel"], "model_type": "sam", "vision_config": dict(SLIMSAM_VISION)}
        (directory / "config.json").write_text(json.dumps(short))
    else:
        (directory / "config.json").write_text(json.dumps(config_429(config), indent=2))
        (directory / "preprocessor_config.json").write_text(json.dumps(hub_preprocessor_config(256), indent=2))
    state = transformers_weights(model)
    if layout in ("bin", "both"):
        torch.save(state, directory / "pytorch_model.bin")
    if layout in ("safetensors", "both", "slimsam"):  # saved without the tied duplicate, as the Hub's files are
        save_file({key: value for key, value in state.items() if key != TIED[1]}, directory / "model.safetensors")
    return model.state_dict()


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> Callable[[str], tuple[Path, dict[str, torch.Tensor]]]:
    """`layouts(name)` -> (read-only directory, expected state dict), each layout written once per module."""
    written: dict[str, tuple[Path, dict[str, torch.Tensor]]] = {}

    def get(layout: str) -> tuple[Path, dict[str, torch.Tensor]]:
        if layout not in written:
            directory = tmp_path_factory.mktemp("layouts") / layout
            written[layout] = directory, write_layout(directory, layout)
        return written[layout]

    return get


def small_official_sam_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return perturb_(small_official_sam(), seed=11).state_dict()


def hub_cache(cache: Path, repo_id: str, source: Path) -> None:
    """Puts `source`'s files in a Hugging Face cache as a downloaded snapshot of `repo_id` (refs/main -> COMMIT)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(source, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, used offline by huggingface_hub and transformers."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def assert_holds(model: SamModel, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key].float().cpu(), value.float()), key


def cli_scores(model: str, tmp_path: Path) -> list[float]:
    """`sam-hf segment --model MODEL` on a small image with one click: the three scores it writes."""
    image, out = tmp_path / "image.png", tmp_path / "scores.json"
    PIL.Image.fromarray(IMAGE).save(image)
    main(
        [
            "segment",
            str(image),
            "--point",
            "30,20",
            "--multimask",
            "--out",
            str(tmp_path / "m.png"),
            "--json",
            str(out),
            "--model",
            model,
            "--device",
            "cpu",
        ]
    )
    return json.loads(out.read_text())["scores"]


IMAGE = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def predictor_scores(model: SamModel, processor: SamProcessor) -> np.ndarray:
    predictor = SamPredictor(model, processor)
    predictor.set_image(IMAGE)
    return predictor.predict(point_coords=np.array([[30.0, 20.0]]), multimask_output=True).scores


ENTRY_POINTS: dict[str, Callable[[str, Path], SamModel]] = {
    "from_pretrained": lambda name, tmp: SamModel.from_pretrained(name),
    "load_sam": lambda name, tmp: load_sam(name, device="cpu")[0],
    "space": lambda name, tmp: (
        app.Segmenter.load(app.parse_args(["--model", name]).model, device="cpu").predictor.model
    ),
}
HF_LAYOUTS = ["bin", "safetensors", "both", "slimsam", "sam_hf"]


def reference_model(layout: str, expected: dict[str, torch.Tensor]) -> SamModel:
    """The model each layout holds, built directly from its weights (not through any loader)."""
    config = SamConfig(vision_config=SLIMSAM_VISION) if layout == "slimsam" else small_sam_config()
    model = SamModel(config)
    model.load_state_dict(expected, strict=True)
    return model.eval()


@pytest.mark.parametrize("where", ["dir", "hub"])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("layout", HF_LAYOUTS)
def test_model_layouts_load_through_every_entry_point(layout, entry, where, tmp_path, offline_cache, layouts):
    directory, expected = layouts(layout)
    name = str(directory)
    if where == "hub":
        hub_cache(offline_cache, "facebook/sam-vit-base", directory)
        name = "facebook/sam-vit-base"
    model = ENTRY_POINTS[entry](name, tmp_path)
    assert isinstance(model, SamModel)
    assert_holds(model, expected)
    # Weights from transformers' layout are official weights: the official decoder LayerNorm epsilon.
    assert model.config.mask_decoder_config.layer_norm_eps == 1e-5
    if layout == "slimsam":  # the short config's missing fields take transformers' defaults
        vision = model.config.vision_config
        assert (vision.hidden_size, vision.mlp_dim, vision.num_hidden_layers, vision.image_size) == (
            384,
            1536,
            12,
            1024,
        )


@pytest.mark.parametrize("where", ["dir", "hub"])
@pytest.mark.parametrize("layout", [*(name for name in HF_LAYOUTS if name != "slimsam"), "official"])
def test_cli_model_option_reads_every_layout(layout, where, tmp_path, offline_cache, layouts):
    """`sam-hf segment --model X` gives the scores of the model the files hold. (SlimSAM's short config loads through
    the same `load_sam` call, tested above; its 1024-pixel encoder would take minutes here.)"""
    directory, expected = layouts(layout)
    name = str(directory / OFFICIAL_FILE) if layout == "official" else str(directory)
    if where == "hub":
        hub_cache(offline_cache, "org/sam-checkpoint", directory)
        name = "org/sam-checkpoint" + (f"/{OFFICIAL_FILE}" if layout == "official" else "")
    reference = reference_model(layout, expected)
    np.testing.assert_allclose(
        cli_scores(name, tmp_path), predictor_scores(reference, SamProcessor.for_config(reference.config)), atol=1e-5
    )


@pytest.mark.parametrize("layout", ["bin", "safetensors", "both", "slimsam"])
def test_hub_layouts_are_what_transformers_reads(layout, layouts):
    """The replicated 4.29-era layouts load in transformers' own SamModel with no missing or unexpected key: they are
    the layouts transformers users have."""
    directory, expected = layouts(layout)
    model, info = TransformersSamModel.from_pretrained(directory, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert_holds(model, expected)


@pytest.fixture
def official_repo(tmp_path, offline_cache, layouts) -> tuple[Path, dict[str, torch.Tensor]]:
    """An official checkpoint in a local directory and, as `org/sam-official`, in the offline Hub cache."""
    source, expected = layouts("official")
    directory = tmp_path / "official"
    shutil.copytree(source, directory)
    hub_cache(offline_cache, "org/sam-official", directory)
    return directory, expected


@pytest.mark.parametrize(
    "call",
    [
        lambda d: load_sam(d / OFFICIAL_FILE, device="cpu")[0],  # the file as downloaded with wget
        lambda d: load_sam(d, device="cpu")[0],  # a directory holding only that file
        lambda d: load_sam(d, device="cpu", filename=OFFICIAL_FILE)[0],
        lambda d: load_sam("org/sam-official", device="cpu")[0],  # a Hub repo holding only that file
        lambda d: load_sam("org/sam-official", device="cpu", filename=OFFICIAL_FILE)[0],
        lambda d: load_sam(f"org/sam-official/{OFFICIAL_FILE}", device="cpu")[0],
        lambda d: app.Segmenter.load(app.parse_args(["--model", str(d / OFFICIAL_FILE)]).model).predictor.model,
        lambda d: (
            app.Segmenter.load(app.parse_args(["--model", f"org/sam-official/{OFFICIAL_FILE}"]).model).predictor.model
        ),
    ],
    ids=["file", "dir", "dir+filename", "hub", "hub+filename", "hub-file", "space-file", "space-hub-file"],
)
def test_official_checkpoint_loads_converted_in_memory(official_repo, call):
    directory, expected = official_repo
    model = call(directory)
    assert_holds(model, expected)
    assert model.config.to_dict() == small_sam_config().to_dict()  # read off the shapes, decoder eps 1e-5
    assert not any(path.suffix == ".safetensors" for path in directory.rglob("*"))  # nothing written


def test_official_checkpoint_gives_the_official_predictor_numbers(official_repo):
    from segment_anything import SamPredictor as OfficialPredictor

    directory, _ = official_repo
    official = small_official_sam()
    official.load_state_dict(torch.load(directory / OFFICIAL_FILE, weights_only=True))
    expected = OfficialPredictor(official.eval())
    expected.set_image(IMAGE)
    masks, scores, logits = expected.predict(point_coords=np.array([[30.0, 20.0]]), point_labels=np.array([1]))
    predictor = SamPredictor(*load_sam(directory / OFFICIAL_FILE, device="cpu"))
    predictor.set_image(IMAGE)
    got = predictor.predict(point_coords=np.array([[30.0, 20.0]]), multimask_output=True)
    np.testing.assert_allclose(got.scores, scores, atol=1e-6)  # measured: 6e-8
    np.testing.assert_allclose(got.low_res_logits, logits, atol=1e-5)  # measured: 6e-7
    np.testing.assert_array_equal(got.masks, masks)


def test_from_pretrained_points_official_files_to_load_sam(official_repo):
    directory, _ = official_repo
    with pytest.raises(ValueError, match=r"is a file; from_pretrained takes a model directory.*load_sam"):
        SamModel.from_pretrained(directory / OFFICIAL_FILE)


def test_several_official_checkpoints_need_a_filename(official_repo, tmp_path):
    directory, _ = official_repo
    shutil.copy(directory / OFFICIAL_FILE, directory / "sam_vit_other.pth")
    with pytest.raises(ValueError, match=r"several official checkpoints.*sam_vit_other\.pth.*filename="):
        load_sam(directory, device="cpu")
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        load_sam("org/sam-official/missing.pth", device="cpu")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint file at .*nowhere\.pth"):
        load_sam(tmp_path / "nowhere.pth", device="cpu")
    with pytest.raises(TypeError, match="model must be a Hub id or a path"):
        load_sam(3, device="cpu")
    with pytest.raises(TypeError, match="filename must be a file name"):
        load_sam(directory, device="cpu", filename=Path(OFFICIAL_FILE))


def test_a_pickle_holding_more_than_tensors_is_refused_and_not_run(tmp_path):
    """Official files go through the weights-only unpickler too (tests/test_unsafe_files.py has the other loaders)."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1), "x": Exploit()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_sam(tmp_path / "evil.pth", device="cpu")
    assert not marker.exists()
