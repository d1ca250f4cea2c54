package apiserver

import (
	"context"
	"encoding/json"
	"net/http"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/drover/drover/api"
	"github.com/drover/drover/auth"
	"github.com/drover/drover/store"
)

var errUnauthorized = api.NewError(http.StatusUnauthorized, api.CodeUnauthorized, "", "missing or invalid API key: send HTTP Basic accessKey:secretKey or \"Authorization: Bearer accessKey:secretKey\"")

// authenticate finds the principal of a request.
func (s *Server) authenticate(ctx context.Context, r *http.Request) (*auth.Principal, *api.Error) {
	ak, sk, ok := auth.Credentials(r)
	if !ok || ak == "" || sk == "" {
		return nil, errUnauthorized
	}
	p, hash, found, err := s.auth.Lookup(ak, func() (auth.Principal, string, int64, bool, error) {
		resp, err := s.st.Cli.Txn(ctx).Then(
			clientv3.OpGet(s.st.ObjectKey("apikeys", ak)),
			clientv3.OpGet(s.st.SecretKey("apikeys", ak)),
		).Commit()
		if err != nil {
			return auth.Principal{}, "", 0, false, err
		}
		objKvs := resp.Responses[0].GetResponseRange().Kvs
		secKvs := resp.Responses[1].GetResponseRange().Kvs
		if len(objKvs) == 0 || len(secKvs) == 0 {
			return auth.Principal{}, "", 0, false, nil
		}
		var key api.APIKey
		if err := json.Unmarshal(objKvs[0].Value, &key); err != nil {
			return auth.Principal{}, "", 0, false, err
		}
		return auth.Principal{AccessKey: ak, Role: key.Spec.Role, HostID: key.Spec.HostID}, string(secKvs[0].Value), resp.Header.Revision, true, nil
	})
	if err != nil {
		return nil, store.Unavailable(err)
	}
	if !found || !auth.SecretMatches(hash, sk) {
		return nil, errUnauthorized
	}
	return &p, nil
}

func forbidden(p *auth.Principal, what string) *api.Error {
	return api.NewError(http.StatusForbidden, api.CodeForbidden, "", "key %s (role %s) may not %s", p.AccessKey, p.Role, what)
}
