# For those who build images with Docker; `make image` builds the same image
# without a daemon (cmd/syncer/internal/image).
FROM golang:1.26 AS build
WORKDIR /src
COPY . .
ARG VERSION=dev
RUN cd cmd/syncer && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /syncer .

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /syncer /usr/local/bin/syncer
# kcp's generated syncer Deployment runs /ko-app/syncer (ko's layout).
COPY --from=build /syncer /ko-app/syncer
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/syncer"]
