package applier

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestIsNotServedTellsAMissingResourceTypeFromAMissingObject(t *testing.T) {
	widgets := schema.GroupResource{Group: "example.com", Resource: "widgets"}
	tests := map[string]struct {
		err  error
		want bool
	}{
		"404 page of an unknown API":     {apierrors.NewGenericServerResponse(404, "patch", widgets, "w1", "404 page not found", 0, true), true},
		"wrapped":                        {fmt.Errorf("apply: %w", apierrors.NewGenericServerResponse(404, "patch", widgets, "w1", "", 0, true)), true},
		"missing object":                 {apierrors.NewNotFound(widgets, "w1"), false},
		"missing namespace":              {apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "team"), false},
		"other error":                    {apierrors.NewBadRequest("x"), false},
		"plain error with the same text": {errors.New("the server could not find the requested resource"), false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tt.want, IsNotServed(tt.err))
		})
	}
}
