package scheduler

import "github.com/drover/drover/api"

// HasHealthCheck says whether a container is health-checked (its own
// launch config's check, or its service's for a primary).
func HasHealthCheck(svc *api.Service, ct *api.Container) bool {
	if ct.Spec.LaunchConfig != nil && ct.Spec.LaunchConfig.HealthCheck != nil {
		return true
	}
	return ct.Spec.LaunchConfigName == "" && svc != nil && svc.Spec.HealthCheck != nil
}

// Ready says whether a container does its job: running (or, if it starts
// once, finished), and healthy where it has a health check.
func Ready(svc *api.Service, ct *api.Container) bool {
	if ct.Spec.LaunchConfig != nil && ct.Spec.LaunchConfig.StartOnce && ct.Status.State == api.ContainerStopped && ct.Status.ExitCode == 0 {
		return true
	}
	if ct.Status.State != api.ContainerRunning {
		return false
	}
	return !HasHealthCheck(svc, ct) || ct.Status.Health == "healthy"
}

// Outdated reports whether a container runs a launch config its service no
// longer has (it will be replaced by the rolling upgrade).
func Outdated(svc *api.Service, ct *api.Container) bool {
	want := svc.Spec.LaunchConfig
	if ct.Spec.LaunchConfigName != "" {
		want = nil
		for i := range svc.Spec.Sidekicks {
			if svc.Spec.Sidekicks[i].Name == ct.Spec.LaunchConfigName {
				s := svc.Spec.Sidekicks[i]
				s.Name = ""
				want = &s
			}
		}
		if want == nil {
			return true // the sidekick was removed
		}
	}
	if want == nil || ct.Spec.LaunchConfig == nil {
		return true
	}
	// A container's launch config is its service's, verbatim (the
	// scheduler's own labels go on the container object, not in it).
	return !api.SameJSON(ct.Spec.LaunchConfig, want)
}

// UnitOutdated says whether a unit must be replaced: a part runs an old
// config, or a part is missing (a create cut short, a primary deleted by
// hand).
func UnitOutdated(svc *api.Service, u *Unit) bool {
	has := map[string]bool{}
	for _, ct := range u.Containers {
		if Outdated(svc, ct) {
			return true
		}
		has[ct.Spec.LaunchConfigName] = true
	}
	if !has[""] {
		return true
	}
	for _, sk := range svc.Spec.Sidekicks {
		if !has[sk.Name] {
			return true
		}
	}
	return false
}
