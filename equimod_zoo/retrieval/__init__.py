"""Nearest neighbours in feature stores: an exact faiss index in clip-retrieval's layout, and a contact sheet.

    from equimod_zoo.retrieval import find_neighbours
    result = find_neighbours(["features/flowers_simclr", "features/flowers_equimod"], "queries/", out="neighbours")
    result.sheet           # neighbours/neighbours.png: per query, one row per model
"""
from equimod_zoo.retrieval.neighbours import ModelNeighbours, Neighbour, NeighboursResult, find_neighbours

__all__ = ["find_neighbours", "NeighboursResult", "ModelNeighbours", "Neighbour"]
