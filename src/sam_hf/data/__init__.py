from .scenes import COLORS, SHAPES, Scene, SceneObject, ShapesDataset, generate_scene

__all__ = ["COLORS", "SHAPES", "Scene", "SceneObject", "ShapesDataset", "generate_scene"]
