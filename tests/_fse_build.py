"""The entropy coder under test: PIL_l3ic._fse, or the build named by L3IC_FSE_SO (e.g. the
AddressSanitizer build of benchmarks/fse_asan.sh). Imports nothing else of the package."""
import importlib.util
import os


def load_fse():
    path = os.environ.get("L3IC_FSE_SO")
    if path:
        spec = importlib.util.spec_from_file_location("PIL_l3ic._fse", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    from PIL_l3ic import _fse
    return _fse
