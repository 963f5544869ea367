"""Procedural scenes of named shapes with exact masks (`generate_scene`): data for training, tests and demos."""

from .scenes import COLORS, HELD_OUT_SEED, SHAPES, Scene, SceneObject, ShapesDataset, generate_scene

__all__ = ["COLORS", "HELD_OUT_SEED", "SHAPES", "Scene", "SceneObject", "ShapesDataset", "generate_scene"]
