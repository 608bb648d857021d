FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir .
COPY audio_config.env .env.example ./
RUN mkdir -p responses
EXPOSE 8000
# Behind a TLS proxy: set PUBLIC_BASE_URL=https://your.host and TWILIO_AUTH_TOKEN.
CMD ["callscribe", "serve", "--host", "0.0.0.0", "--port", "8000", "--forwarded-allow-ips", "*"]
