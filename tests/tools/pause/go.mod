// The test node's pod sandbox image (see main.go and ../image/build.sh).
module modelway.local/tools/pause

go 1.26.0
