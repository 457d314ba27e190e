"""The build hook of stem_explorer (its metadata is in pyproject.toml): the widgets'
JavaScript bundle (js/ -> stem_explorer/static/) is built before the package is."""

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
BUNDLE = HERE / "stem_explorer" / "static" / "mask_editor.js"


class BuildWithBundle(build_py):
    """Run scripts/build_js.sh when npm is there (it does nothing when the bundle is current).

    Without npm the bundle already present is packaged: an sdist carries it, built. A
    wheel without it would give a MaskEditor that cannot load, so that build fails,
    except in an editable install, where scripts/setup.sh builds the bundle next.
    """

    def run(self):
        script = HERE / "scripts" / "build_js.sh"
        if script.exists() and shutil.which("npm"):
            subprocess.run(["bash", str(script)], check=True, cwd=HERE)
        elif not BUNDLE.exists() and not self.editable_mode:
            raise SystemExit(
                f"stem_explorer: the widgets' JavaScript bundle {BUNDLE} is missing and npm "
                f"is not on PATH: install Node.js 20+ with npm and build again, or build the "
                f"wheel from the sdist, which carries the bundle"
            )
        super().run()


setup(cmdclass={"build_py": BuildWithBundle})
