# The gateway as a container image. From the repository's root:
#
#   docker build -t tornado-sse:2.0.0.dev0 .
#   docker run --rm -p 3000:3000 -e CALLBACK_URL=http://backend:8000/sse/callback tornado-sse:2.0.0.dev0
#   docker run --rm -p 3000:3000 tornado-sse:2.0.0.dev0 demo      # the bundled demo
#
# Every setting comes from the environment (PORT, CALLBACK_URL, REDIS_URL, ...) over
# conf/production.conf. The tag is the package version (tornado_sse/__init__.py); push it to your
# registry under the name docs/deploy/kubernetes-sidecar.yaml uses.
#
# Not built by this repository's CI (no container engine there): tests/unit/test_deploy_files.py
# checks that every path, extra and command named here exists.

# -- build: wheels of the gateway and of everything it needs ----------------------------------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY tornado_sse ./tornado_sse
COPY clients/python ./clients/python
RUN pip wheel --wheel-dir /wheels '.[redis,fast]'

# -- run: the wheels installed, no compiler, no sources, not root -----------------------------
FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels 'tornado-sse[redis,fast]' && rm -rf /wheels
COPY conf/production.conf /etc/tornado-sse/production.conf
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin tornado-sse
USER 10001
EXPOSE 3000
# /healthz answers 200 while the process runs (it does not depend on the backend or Redis).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=2)"]
ENTRYPOINT ["tornado-sse"]
CMD ["--conf", "/etc/tornado-sse/production.conf"]
