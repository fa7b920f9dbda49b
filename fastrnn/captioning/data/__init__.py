"""COCO captioning data: the CS231n folder loader and a synthetic generator of the same files."""
from fastrnn.captioning.data.coco import decode_captions, load_coco_data, sample_coco_minibatch


def default_data_dir(progress=True):
    """The folder of the built-in dataset: the cached synthetic "small" set, made on first
    use (with a progress bar unless ``progress`` is False)."""
    from fastrnn.captioning.data.synthetic import ensure_dataset
    return ensure_dataset("small", progress=progress)


__all__ = ["load_coco_data", "sample_coco_minibatch", "decode_captions", "default_data_dir"]
