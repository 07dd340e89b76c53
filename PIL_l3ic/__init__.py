"""PIL_l3ic: the l3ic learned lossy image codec as a Pillow plugin.

    import PIL_l3ic                      # registers format "L3IC" (.l3c, image/x-l3ic)
    from PIL import Image
    Image.open("photo.jpg").save("photo.l3c", quality="32c")
    Image.open("photo.l3c").load()

``QUALITIES`` lists the models (also accepted: "low"/"medium"/"high" and integers 1-100, see
``L3icImagePlugin``).  ``set_num_threads(n)`` sets the threads used by the networks and the
entropy coder (default: environment ``L3IC_NUM_THREADS``, else all cores).  Importing is cheap:
the TFLite interpreters are created on the first encode or decode.
"""
from . import L3icImagePlugin  # noqa: F401  (registers the plugin with Pillow)
from .runtime import QUALITIES, set_num_threads

__version__ = "0.1.0"
__all__ = ["QUALITIES", "set_num_threads", "__version__"]
