# One image, both roles: `fedloom server ...` or `fedloom client ...` (the entrypoint is the
# fedloom CLI). CPU-only torch, a non-root user, and no secrets: certificates and tokens are
# mounted at run time (see compose.yaml and the README's deployment section).
#   docker build -t fedloom .
#   docker run --rm fedloom --help
FROM python:3.11-slim

# CPU wheels only: the CUDA build would add gigabytes no federated client here uses.
ARG TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN pip install ${TORCH_SPEC}

WORKDIR /opt/fedloom
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && rm -rf build src/*.egg-info
COPY examples ./examples

# The runtime user owns only its home and the two mount points: certificates (written by
# `fedloom certs` into a volume at start, never baked in) and run directories.
RUN useradd --create-home --uid 10001 --user-group fedloom \
    && mkdir -p /certs /runs \
    && chown fedloom:fedloom /certs /runs
USER fedloom
WORKDIR /home/fedloom
ENV FEDLOOM_DATA=/home/fedloom/.cache/fedloom

EXPOSE 8443 8080
ENTRYPOINT ["fedloom"]
CMD ["--help"]
