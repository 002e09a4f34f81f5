# One image for every service; the service is the first argument:
#   docker run IMAGE grid --http 0.0.0.0:8000
# and `shequ init` (the install job) is the same image with another command.
# docs/deploy.md describes building and pushing it.

# Build stage: installs the package and its dependencies into a virtualenv.
# Every dependency ships wheels for CPython 3.11 on Linux, so no compiler is
# needed even here; the final stage gets only the finished virtualenv.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/shequ
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY services/ services/
RUN /opt/shequ/bin/pip install --no-cache-dir . \
 && /opt/shequ/bin/python -m compileall -q /opt/shequ/lib

# Final stage: the interpreter of the same base, the virtualenv, a non-root user.
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 shequ \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin shequ
COPY --from=build /opt/shequ /opt/shequ
# The root filesystem is read-only in the pods: no bytecode is written at run time.
ENV PATH=/opt/shequ/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["python", "-m", "shequ.runner"]
CMD ["grid", "--http", "0.0.0.0:8000"]
