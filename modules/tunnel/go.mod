module github.com/tmc-syncer/syncer/modules/tunnel

go 1.26.0

replace github.com/tmc-syncer/syncer/modules/engine => ../engine
