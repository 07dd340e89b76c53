"""The report of a ``PIL_l3ic.batch`` run (``batch.convert`` / ``batch.decode`` return it):
counts, bytes, bits per pixel and throughput, as text (``l3ic encode DIR`` prints it) or JSON."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from PIL_l3ic.conversion import size_text


@dataclass
class Report:
    """Final report: counts, bytes and pixels over converted + skipped files, throughput over
    converted files.  ``text()`` and ``as_dict()`` (JSON-ready)."""
    kind: str
    settings: dict
    runner: str = ""
    files: int = 0
    converted: int = 0
    skipped: int = 0
    failures: list = field(default_factory=list)     # [(file, reason)]
    bytes_in: int = 0
    bytes_out: int = 0
    pixels: int = 0
    bpp_sum: float = 0.0
    converted_pixels: int = 0
    elapsed_s: float = 0.0
    processes: set = field(default_factory=set)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def add(self, row: dict) -> None:
        if row["status"] == "failed":
            self.failures.append((row["src"], row["reason"]))
            return
        self.converted += row["status"] == "converted"
        self.skipped += row["status"] == "skipped"
        self.bytes_in += row["bytes_in"]
        self.bytes_out += row["bytes_out"]
        self.pixels += row["pixels"]
        self.bpp_sum += row["bpp"]
        if row["status"] == "converted":
            self.converted_pixels += row["pixels"]
            self.processes.add(row["proc"])

    def as_dict(self) -> dict:
        done, l3c = self.converted + self.skipped, (self.bytes_out if self.kind == "encode"
                                                      else self.bytes_in)
        t = max(self.elapsed_s, 1e-9)
        return {"kind": self.kind, "settings": self.settings, "runner": self.runner,
                "files": self.files, "converted": self.converted, "skipped": self.skipped,
                "failed": self.failed, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "pixels": self.pixels, "bpp": 8 * l3c / self.pixels if self.pixels else None,
                "mean_bpp": self.bpp_sum / done if done else None,
                "elapsed_s": round(self.elapsed_s, 3),
                "images_per_s": self.converted / t,
                "mpixels_per_s": self.converted_pixels / t / 1e6,
                "worker_processes": len(self.processes),
                "failures": [{"file": f, "reason": r} for f, r in self.failures]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1)

    def text(self, failures: bool = True) -> str:
        """The report as text; ``failures``: list the failed files (one line each)."""
        d = self.as_dict()
        bpp = f", {d['bpp']:.3f} bpp (mean per file {d['mean_bpp']:.3f})" if d["pixels"] else ""
        lines = [f"{self.kind}: {self.files} files: {self.converted} converted, {self.skipped} "
                 f"skipped (up to date), {self.failed} failed",
                 f"  {size_text(self.bytes_in)} -> {size_text(self.bytes_out)}{bpp}",
                 f"  {self.elapsed_s:.2f} s, {d['images_per_s']:.2f} images/s, "
                 f"{d['mpixels_per_s']:.3f} MP/s on {self.runner}"]
        lines += [f"  failed: {f}: {r}" for f, r in self.failures] if failures else []
        return "\n".join(lines)
