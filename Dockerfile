# syntax=docker/dockerfile:1
#
# fcgiscope in a distroless image: a static binary, no shell, a non-root user.
#
#   docker build -t fcgiscope:dev --build-arg VERSION=$(git describe --tags --always) --build-arg COMMIT=$(git rev-parse HEAD) .
#   docker run --rm fcgiscope:dev version
#
# The demo-php stage is php:8.2-fpm with the demo pages, for
# examples/kubernetes: docker build --target demo-php -t fcgiscope-demo-php:dev .

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Dependencies first: they change less often than the code and stay cached.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=
# CGO_ENABLED=0: a static binary that needs no libc, as distroless/static
# has none. -trimpath keeps the build machine's paths out of the binary;
# the version comes from the build, not from a .git the context may lack.
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
        -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
        -o /out/fcgiscope ./cmd/fcgiscope

FROM php:8.2-fpm AS demo-php
COPY examples/php/ /var/www/html/

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/fcgiscope /fcgiscope
# distroless's "nonroot" user. The examples give php-fpm's socket to this uid
# (listen.owner = 65532) and run the container with nginx's group (101), so
# that nginx may use fcgiscope's socket.
USER 65532:65532
# 9001: FastCGI from the web server (FCGISCOPE_LISTEN); 9180: the admin
# port (FCGISCOPE_ADMIN_LISTEN): /healthz, /readyz, /metrics.
EXPOSE 9001 9180
ENTRYPOINT ["/fcgiscope"]
CMD ["serve"]
