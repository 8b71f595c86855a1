module github.com/fcgiscope/fcgiscope

go 1.26.8

require (
	github.com/caarlos0/env/v11 v11.4.2
	github.com/fsnotify/fsnotify v1.10.1
	github.com/rs/zerolog v1.35.1
)

require (
	github.com/jstemmer/go-junit-report v1.0.0 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/maxbrunsfeld/counterfeiter/v6 v6.6.1 // indirect
	github.com/nginxinc/nginx-go-crossplane v0.4.48 // indirect
	golang.org/x/mod v0.10.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/sys v0.29.0 // indirect
	golang.org/x/tools v0.8.0 // indirect
)
