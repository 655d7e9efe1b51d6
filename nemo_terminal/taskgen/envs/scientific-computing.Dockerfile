# Environment image for taskgen "scientific computing" tasks (one of the 9 pre-built domain images, FACTS.md §7).
# Every generated task's environment/Dockerfile starts FROM this image and only copies its files.
#   docker build --build-arg BASE_IMAGE=python:3.12-slim-bookworm -t nemo-terminal/scientific-computing:1 -f scientific-computing.Dockerfile .
# Offline (no registry): a Debian image with python3, pytest and tmux, and both package lists empty:
#   --build-arg BASE_IMAGE=local/debian-tools:bookworm --build-arg APT_PACKAGES= --build-arg PIP_PACKAGES=
ARG BASE_IMAGE=python:3.12-slim-bookworm
FROM ${BASE_IMAGE}
ARG APT_PACKAGES="tmux asciinema curl ca-certificates procps less file jq git gfortran"
ARG PIP_PACKAGES="pytest==8.3.4 numpy==2.2.1 scipy==1.15.0 sympy==1.13.3"
RUN if [ -n "${APT_PACKAGES}" ]; then \
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${APT_PACKAGES} \
        && rm -rf /var/lib/apt/lists/*; \
    fi
RUN if [ -n "${PIP_PACKAGES}" ]; then python3 -m pip install --no-cache-dir ${PIP_PACKAGES}; fi
WORKDIR /app
