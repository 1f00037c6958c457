module github.com/tmc-syncer/syncer/modules/downstream

go 1.26.0

replace (
	github.com/tmc-syncer/syncer/modules/engine => ../engine
	github.com/tmc-syncer/syncer/modules/transformation => ../transformation
)
