from src.models.beit.beit import Beit

__all__ = ["Beit"]
