"""The tiny SynthAU AU and expression sets that MAL's data and plugin tests share."""

SYNTH = {"subjects": 6, "videos": 1, "frames": 40, "size": 32, "seed": 0, "workers": 1}
AUX_SYNTH = {"images": 60, "size": 32, "seed": 0, "workers": 1}
TINY_DATA = {
    "dataset": "bp4d", "synth": SYNTH, "aus": "bp4d", "protocol": "kfold", "num_folds": 3,
    "val_fraction": 0.05, "image_size": 20, "crop_size": 16, "batch_size": 8,
    "aux_synth": AUX_SYNTH,
    "aux_reader_options": {"consistency_file": "EmoLabel/consistency.txt"},
    "aux_batch_size": 6, "meta_batch_size": 5,
}  # fmt: skip
