module github.com/tmc-syncer/syncer/modules/transformation

go 1.26.0

