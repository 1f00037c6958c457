module github.com/tmc-syncer/syncer/integration

go 1.26.0

replace (
	github.com/tmc-syncer/syncer/modules/downstream => ../modules/downstream
	github.com/tmc-syncer/syncer/modules/engine => ../modules/engine
	github.com/tmc-syncer/syncer/modules/transformation => ../modules/transformation
	github.com/tmc-syncer/syncer/modules/tunnel => ../modules/tunnel
	github.com/tmc-syncer/syncer/modules/upstream => ../modules/upstream
)
