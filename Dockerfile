# One image for the relay and the local voice server (CPU by default; CUDA is chosen in docker-compose.gpu.yml).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY backend ./backend
COPY frontend_demo ./frontend_demo
ARG EXTRAS=local
RUN pip install ".[${EXTRAS}]"
EXPOSE 8080 8090
CMD ["parley", "serve", "--host", "0.0.0.0", "--port", "8080"]
