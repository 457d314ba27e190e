# A user image: JupyterLab with stem_explorer, its widgets' bundle and a small sample,
# on the Jupyter Docker Stacks' minimal-notebook (JupyterLab, Notebook 7, the jovyan
# user, start-notebook.py as the command).
#
#   docker build -t stem-explorer .
#   docker run -p 8888:8888 stem-explorer        # open the printed URL, then notebooks/explorer.ipynb
#
# Not built by the test suite (no Docker there): tests/test_dockerfile.py checks that it
# parses and that its build and install commands are those of tests/test_packaging.py.
ARG BASE=quay.io/jupyter/minimal-notebook:python-3.11

# 1. the sdist, then the wheel from it; Node.js only here, for the widgets' bundle
FROM ${BASE} AS build
RUN mamba install --yes --quiet "nodejs=20" && mamba clean --all --force-pkgs-dirs --yes
COPY --chown=${NB_UID}:${NB_GID} . /tmp/src
WORKDIR /tmp/src
RUN bash scripts/build_js.sh && \
    python -m pip install --no-cache-dir build && \
    python -m build --outdir /tmp/dist .

# 2. the user image: the wheel with the jupyter extra, the notebooks, the sample
FROM ${BASE}
COPY --from=build /tmp/dist/ /tmp/dist/
RUN pip install --no-cache-dir "$(ls /tmp/dist/stem_explorer-*.whl)[jupyter]" && \
    rm -rf /tmp/dist
COPY --chown=${NB_UID}:${NB_GID} notebooks/ /home/${NB_USER}/notebooks/
# the sample outside the home folder (JupyterHub mounts a volume there); the demo's
# analyses on it compile the kernels into numba's cache in the image
USER root
RUN mkdir -p /opt/stem_explorer && chown "${NB_UID}:${NB_GID}" /opt/stem_explorer
USER ${NB_UID}
RUN stem-explorer demo --dir /opt/stem_explorer/sample_data --nav-shape 64 64 --sig-shape 128 128 --workers 1
ENV STEM_EXPLORER_DATA=/opt/stem_explorer/sample_data/sample_64x64x128x128.h5
