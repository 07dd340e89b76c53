"""Fetch the Debian photo packages listed in ../shared/data/README.md into training/data_cache/.

    python -m training.fetch_data

Uses `apt-get download` + `dpkg -x` (no system-wide install); run `apt-get update` first on a new
machine. Nothing fetched here is committed.
"""
import glob
import os
import subprocess
import tempfile

CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data_cache")
PACKAGES = {
    "lomiri-wallpapers-16.04": "usr/share/backgrounds/*.jpg",
    "lomiri-wallpapers-20.04": "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg",
    "mate-backgrounds": "usr/share/backgrounds/mate/nature/*.jpg",
}


def debian_photos() -> list[str]:
    """Paths of the fetched Debian photos (empty if not fetched)."""
    return sorted(glob.glob(os.path.join(CACHE, "*", "*.jpg")))


def fetch() -> list[str]:
    os.makedirs(CACHE, exist_ok=True)
    for package, pattern in PACKAGES.items():
        dest = os.path.join(CACHE, package)
        if os.path.isdir(dest) and os.listdir(dest):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["apt-get", "download", package], cwd=tmp, check=True,
                           stdout=subprocess.DEVNULL)
            deb = glob.glob(os.path.join(tmp, "*.deb"))[0]
            root = os.path.join(tmp, "root")
            subprocess.run(["dpkg", "-x", deb, root], check=True)
            os.makedirs(dest, exist_ok=True)
            for path in glob.glob(os.path.join(root, pattern)):
                os.replace(path, os.path.join(dest, os.path.basename(path)))
    return debian_photos()


if __name__ == "__main__":
    photos = fetch()
    print(f"{len(photos)} Debian photos in {CACHE}")
