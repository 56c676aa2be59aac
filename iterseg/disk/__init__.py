"""Files on disk: reading images (images.py; tiled TIFFs region by region, tiff.py), writing results
atomically (outputs.py in memory, pyramid.py tile by tile), both writers on one metadata module
(ome.py). A leaf package: it imports nothing of iterseg but the errors."""
