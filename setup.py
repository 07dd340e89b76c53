"""Build script: everything declarative lives in setup.cfg; this only adds the C extension."""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extra_compile = ["-O3"]
extra_link = []
if os.environ.get("L3IC_SANITIZE"):  # used by scripts that build under ASan/UBSan
    flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    extra_compile = flags
    extra_link = flags

fse = Extension(
    "PIL_l3ic._fse",
    sources=["_fse/_fse.pyx", "_fse/fse_tables.c", "_fse/fse_hash.c", "_fse/fse_encode.c",
             "_fse/fse_decode.c", "_fse/fse_batch.c", "_fse/fse_context.c",
             "_fse/fse_ctxdec.c", "_fse/fse_class.c", "_fse/fse_classdec.c"],
    include_dirs=["_fse", numpy.get_include()],
    depends=["_fse/fse.h", "_fse/fse_internal.h", "_fse/_fse_class.pxi"],
    extra_compile_args=extra_compile,
    extra_link_args=extra_link,
)

setup(ext_modules=cythonize([fse], language_level=3))
