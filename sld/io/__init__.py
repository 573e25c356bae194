"""What the command line and the evaluation both write: atomic files and output folders (files.py), PNG records
(records.py) with their AUTOMATIC1111 text (infotext.py), model file hashes (model_id.py), labelled image grids
(image_grid.py)."""
