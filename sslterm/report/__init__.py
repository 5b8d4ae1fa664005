"""Figures, exports and sweep tables made from run directories (torch-free; matplotlib
loads only when a figure is drawn)."""
