package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// ssmConfigCount is how many String parameters go under config/: more than one page of
// GetParametersByPath's ten, so the paginator has to follow a NextToken.
const ssmConfigCount = 12

// newSSMClient builds an SSM client for the server at endpoint, configured as newClient
// configures the KMS one.
func newSSMClient(ctx context.Context, endpoint, region, keyID, secret string) (*ssm.Client, error) {
	cfg, err := loadConfig(ctx, region, keyID, secret)
	if err != nil {
		return nil, err
	}
	return ssm.NewFromConfig(cfg, func(o *ssm.Options) {
		o.BaseEndpoint = aws.String(endpoint)
	}), nil
}

// parameterDetail describes a Parameter for the output (the value only where asked: a
// SecureString value read without decryption is described by what it is not).
func parameterDetail(p *ssmtypes.Parameter, withValue bool) map[string]any {
	d := map[string]any{"name": aws.ToString(p.Name), "type": string(p.Type), "version": p.Version,
		"arn": aws.ToString(p.ARN), "dataType": aws.ToString(p.DataType)}
	if withValue {
		d["value"] = aws.ToString(p.Value)
	}
	if p.Selector != nil {
		d["selector"] = *p.Selector
	}
	return d
}

// checkParameter judges a GetParameter answer.
func checkParameter(p *ssmtypes.Parameter, name string, kind ssmtypes.ParameterType, value string, version int64,
	selector string) string {
	switch {
	case p == nil:
		return "no Parameter in the answer"
	case aws.ToString(p.Name) != name:
		return fmt.Sprintf("Name %q, want %q", aws.ToString(p.Name), name)
	case p.Type != kind:
		return fmt.Sprintf("Type %q, want %q", p.Type, kind)
	case aws.ToString(p.Value) != value:
		return fmt.Sprintf("Value %q, want %q", aws.ToString(p.Value), value)
	case p.Version != version:
		return fmt.Sprintf("Version %d, want %d", p.Version, version)
	case aws.ToString(p.Selector) != selector:
		return fmt.Sprintf("Selector %q, want %q", aws.ToString(p.Selector), selector)
	case !strings.HasSuffix(aws.ToString(p.ARN), ":parameter"+name):
		return fmt.Sprintf("ARN %q does not end in :parameter%s", aws.ToString(p.ARN), name)
	case p.LastModifiedDate == nil:
		return "no LastModifiedDate"
	}
	return ""
}

// parameters drives Parameter Store through a small hierarchy's life: a SecureString under the
// default key with two versions, a label, reads by version and by label, a walk of the
// hierarchy with the paginator, the history, and deletion, with the SDK's typed errors for a
// duplicate, a missing version and a deleted parameter. Every name is under a prefix made for
// this run, so runs against the same server do not meet.
func parameters(ctx context.Context, r *runner, c *ssm.Client) {
	prefix := "/e2e/go-sdk-" + randomHex(6)
	password := prefix + "/db/password"
	user := prefix + "/db/user"
	values := []string{"go-sdk pässwörd ✓ one", "go-sdk password two"}

	put, err := c.PutParameter(ctx, &ssm.PutParameterInput{
		Name: aws.String(password), Value: aws.String(values[0]), Type: ssmtypes.ParameterTypeSecureString,
		Description: aws.String("e2e: aws-sdk-go-v2"),
		Tags:        []ssmtypes.Tag{{Key: aws.String("client"), Value: aws.String("aws-sdk-go-v2")}},
	})
	var detail map[string]any
	if err == nil {
		detail = map[string]any{"prefix": prefix, "name": password, "version": put.Version, "tier": string(put.Tier)}
	}
	if !r.succeeded("PutParameterSecureString", err, detail, func() string {
		if put.Version != 1 || put.Tier != ssmtypes.ParameterTierStandard {
			return fmt.Sprintf("Version %d and Tier %q, want 1 and Standard", put.Version, put.Tier)
		}
		return ""
	}) {
		return // everything after needs the parameter
	}

	names := []string{user}
	for i := range ssmConfigCount {
		names = append(names, fmt.Sprintf("%s/config/key-%02d", prefix, i))
	}
	var putErr error
	for _, name := range names {
		if _, putErr = c.PutParameter(ctx, &ssm.PutParameterInput{
			Name: aws.String(name), Value: aws.String("value of " + name), Type: ssmtypes.ParameterTypeString,
		}); putErr != nil {
			break
		}
	}
	r.succeeded("PutParameterStrings", putErr, map[string]any{"count": len(names)}, nil)

	got, err := c.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(password), WithDecryption: aws.Bool(true)})
	detail = nil
	if err == nil {
		detail = parameterDetail(got.Parameter, true)
	}
	r.succeeded("GetParameterWithDecryption", err, detail, func() string {
		return checkParameter(got.Parameter, password, ssmtypes.ParameterTypeSecureString, values[0], 1, "")
	})

	hidden, err := c.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(password)})
	detail = nil
	if err == nil {
		value := aws.ToString(hidden.Parameter.Value)
		detail = parameterDetail(hidden.Parameter, false)
		detail["valueIsPlaintext"] = value == values[0]
		detail["valueContainsPlaintext"] = strings.Contains(value, values[0])
		detail["valueEmpty"] = value == ""
	}
	r.succeeded("GetParameterWithoutDecryption", err, detail, func() string {
		value := aws.ToString(hidden.Parameter.Value)
		if value == "" || strings.Contains(value, values[0]) {
			return "without decryption the value is empty or shows the plaintext"
		}
		return ""
	})

	over, err := c.PutParameter(ctx, &ssm.PutParameterInput{
		Name: aws.String(password), Value: aws.String(values[1]), Type: ssmtypes.ParameterTypeSecureString,
		Overwrite: aws.Bool(true),
	})
	detail = nil
	if err == nil {
		detail = map[string]any{"version": over.Version, "tier": string(over.Tier)}
	}
	r.succeeded("PutParameterOverwrite", err, detail, func() string {
		if over.Version != 2 {
			return fmt.Sprintf("Version %d, want 2", over.Version)
		}
		return ""
	})

	_, err = c.PutParameter(ctx, &ssm.PutParameterInput{
		Name: aws.String(password), Value: aws.String("not without Overwrite"), Type: ssmtypes.ParameterTypeSecureString,
	})
	r.failedWith("PutParameterExists", "ParameterAlreadyExists", err, isType[*ssmtypes.ParameterAlreadyExists])

	labelled, err := c.LabelParameterVersion(ctx, &ssm.LabelParameterVersionInput{
		Name: aws.String(password), ParameterVersion: aws.Int64(1), Labels: []string{"golden"},
	})
	detail = nil
	if err == nil {
		detail = map[string]any{"parameterVersion": labelled.ParameterVersion, "invalidLabels": sorted(labelled.InvalidLabels)}
	}
	r.succeeded("LabelParameterVersion", err, detail, func() string {
		if labelled.ParameterVersion != 1 || len(labelled.InvalidLabels) != 0 {
			return "the label did not go on version 1"
		}
		return ""
	})

	for _, by := range []struct {
		step, selector, value string
		version               int64
	}{
		{"GetParameterByLabel", ":golden", values[0], 1},
		{"GetParameterByVersion", ":2", values[1], 2},
	} {
		got, err := c.GetParameter(ctx, &ssm.GetParameterInput{
			Name: aws.String(password + by.selector), WithDecryption: aws.Bool(true),
		})
		detail = nil
		if err == nil {
			detail = parameterDetail(got.Parameter, true)
		}
		r.succeeded(by.step, err, detail, func() string {
			return checkParameter(got.Parameter, password, ssmtypes.ParameterTypeSecureString, by.value, by.version,
				by.selector)
		})
	}

	_, err = c.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(password + ":3")})
	r.failedWith("GetParameterMissingVersion", "ParameterVersionNotFound", err,
		isType[*ssmtypes.ParameterVersionNotFound])

	// The whole hierarchy, ten at a time, through the SDK's paginator.
	pages := ssm.NewGetParametersByPathPaginator(c, &ssm.GetParametersByPathInput{
		Path: aws.String(prefix), Recursive: aws.Bool(true), WithDecryption: aws.Bool(true),
		MaxResults: aws.Int32(10),
	})
	found := map[string]string{}
	var pageSizes []int
	var repeated []string
	err = nil
	for pages.HasMorePages() {
		page, pageErr := pages.NextPage(ctx)
		if pageErr != nil {
			err = pageErr
			break
		}
		pageSizes = append(pageSizes, len(page.Parameters))
		for _, p := range page.Parameters {
			if _, seen := found[aws.ToString(p.Name)]; seen {
				repeated = append(repeated, aws.ToString(p.Name))
			}
			found[aws.ToString(p.Name)] = aws.ToString(p.Value)
		}
	}
	foundNames := make([]string, 0, len(found))
	for name := range found {
		foundNames = append(foundNames, name)
	}
	want := sorted(append(slices.Clone(names), password))
	r.succeeded("GetParametersByPath", err, map[string]any{
		"count": len(found), "pageSizes": pageSizes, "repeated": sorted(repeated),
		"passwordDecrypted": found[password] == values[1],
	}, func() string {
		switch {
		case !slices.Equal(sorted(foundNames), want):
			return fmt.Sprintf("found %v, want %v", sorted(foundNames), want)
		case len(repeated) > 0:
			return fmt.Sprintf("repeated across pages: %v", repeated)
		case slices.ContainsFunc(pageSizes, func(n int) bool { return n > 10 }):
			return fmt.Sprintf("a page over MaxResults 10: %v", pageSizes)
		case len(pageSizes) < 2:
			return "one page for more than ten parameters"
		case found[password] != values[1]:
			return "the SecureString was not decrypted"
		}
		return ""
	})

	missing := prefix + "/db/missing"
	many, err := c.GetParameters(ctx, &ssm.GetParametersInput{
		Names: []string{password, user, missing}, WithDecryption: aws.Bool(true),
	})
	detail = nil
	if err == nil {
		values := map[string]string{}
		for _, p := range many.Parameters {
			values[aws.ToString(p.Name)] = aws.ToString(p.Value)
		}
		detail = map[string]any{"values": values, "invalidParameters": sorted(many.InvalidParameters)}
	}
	r.succeeded("GetParameters", err, detail, func() string {
		if len(many.Parameters) != 2 || !slices.Equal(many.InvalidParameters, []string{missing}) {
			return fmt.Sprintf("%d parameters and InvalidParameters %v", len(many.Parameters), many.InvalidParameters)
		}
		return ""
	})

	// The history, one version per page.
	historyPages := ssm.NewGetParameterHistoryPaginator(c, &ssm.GetParameterHistoryInput{
		Name: aws.String(password), WithDecryption: aws.Bool(true), MaxResults: aws.Int32(1),
	})
	var versions []map[string]any
	historyCount := 0
	err = nil
	for historyPages.HasMorePages() {
		page, pageErr := historyPages.NextPage(ctx)
		if pageErr != nil {
			err = pageErr
			break
		}
		historyCount++
		for _, v := range page.Parameters {
			versions = append(versions, map[string]any{"version": v.Version, "value": aws.ToString(v.Value),
				"labels": sorted(v.Labels), "type": string(v.Type), "keyId": aws.ToString(v.KeyId)})
		}
	}
	r.succeeded("GetParameterHistory", err, map[string]any{"versions": versions, "pages": historyCount}, func() string {
		if len(versions) != 2 || versions[0]["version"] != int64(1) || versions[1]["version"] != int64(2) {
			return fmt.Sprintf("versions %v, want 1 and 2", versions)
		}
		return ""
	})

	described, err := c.DescribeParameters(ctx, &ssm.DescribeParametersInput{
		ParameterFilters: []ssmtypes.ParameterStringFilter{
			{Key: aws.String("Name"), Option: aws.String("Equals"), Values: []string{password}},
		},
	})
	detail = nil
	if err == nil && len(described.Parameters) == 1 {
		p := described.Parameters[0]
		detail = map[string]any{"name": aws.ToString(p.Name), "type": string(p.Type), "keyId": aws.ToString(p.KeyId),
			"version": p.Version, "tier": string(p.Tier), "description": aws.ToString(p.Description)}
	}
	r.succeeded("DescribeParameters", err, detail, func() string {
		if len(described.Parameters) != 1 {
			return fmt.Sprintf("%d parameters described, want 1", len(described.Parameters))
		}
		return ""
	})

	_, err = c.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(password)})
	r.succeeded("DeleteParameter", err, nil, nil)

	_, err = c.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(password), WithDecryption: aws.Bool(true)})
	r.failedWith("GetParameterDeleted", "ParameterNotFound", err, isType[*ssmtypes.ParameterNotFound])

	var deleted, invalid []string
	err = nil
	for chunk := range slices.Chunk(append(slices.Clone(names), password), 10) {
		out, chunkErr := c.DeleteParameters(ctx, &ssm.DeleteParametersInput{Names: chunk})
		if chunkErr != nil {
			err = chunkErr
			break
		}
		deleted = append(deleted, out.DeletedParameters...)
		invalid = append(invalid, out.InvalidParameters...)
	}
	r.succeeded("DeleteParameters", err, map[string]any{"deleted": len(deleted), "invalid": sorted(invalid)},
		func() string {
			switch {
			case !slices.Equal(sorted(deleted), sorted(names)):
				return fmt.Sprintf("deleted %v, want %v", sorted(deleted), sorted(names))
			case !slices.Equal(invalid, []string{password}):
				return fmt.Sprintf("InvalidParameters %v, want the parameter deleted before", invalid)
			}
			return ""
		})
}
