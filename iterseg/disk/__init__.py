"""Files on disk: reading images (images.py), writing results atomically (outputs.py) and tiled
pyramidal TIFFs read region by region and written tile by tile (tiff.py). A leaf package: it imports
nothing of iterseg but the errors."""
