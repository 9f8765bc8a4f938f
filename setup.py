"""Only here to ship the top-level sky/ and recipes/ YAMLs inside the wheel
(as vicuna_ops/assets/); all metadata lives in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithAssets(build_py):
    def run(self):
        super().run()
        root = Path(__file__).resolve().parent
        for kind in ("sky", "recipes"):
            target = Path(self.build_lib) / "vicuna_ops" / "assets" / kind
            target.mkdir(parents=True, exist_ok=True)
            for yaml_file in (root / kind).glob("*.yaml"):
                shutil.copy2(yaml_file, target / yaml_file.name)


setup(cmdclass={"build_py": BuildWithAssets})
